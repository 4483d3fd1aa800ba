// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title GMX-v2-style test exchange for perp-indexer (our own code, not GMX's).
/// @notice Logs like gmx-synthetics' EventEmitter: the same EventLog / EventLog1 / EventLog2
/// declarations and the same EventLogData key/value payload, with the same event names and keys
/// for positions (PositionIncrease / PositionDecrease with the post-trade state), markets
/// (MarketCreated), open interest (OpenInterestUpdated / OpenInterestInTokensUpdated), fees
/// (PositionFeesCollected), orders (OrderExecuted) and insolvent liquidations (InsolventClose).
/// It keeps positions and open interest on chain with getters, so a test can compare what the
/// indexer rebuilt with the contract's own state. Units as in GMX v2: USD x 1e30; prices per
/// smallest token unit x 1e30; sizeInTokens in index-token units; collateral in token units.
/// No tokens move: collateral amounts are credited directly (the indexer only reads events).
contract GmxV2TestExchange {
    // ---- EventUtils.EventLogData, field for field -------------------------------------------
    struct AddressKeyValue { string key; address value; }
    struct AddressArrayKeyValue { string key; address[] value; }
    struct UintKeyValue { string key; uint256 value; }
    struct UintArrayKeyValue { string key; uint256[] value; }
    struct IntKeyValue { string key; int256 value; }
    struct IntArrayKeyValue { string key; int256[] value; }
    struct BoolKeyValue { string key; bool value; }
    struct BoolArrayKeyValue { string key; bool[] value; }
    struct Bytes32KeyValue { string key; bytes32 value; }
    struct Bytes32ArrayKeyValue { string key; bytes32[] value; }
    struct BytesKeyValue { string key; bytes value; }
    struct BytesArrayKeyValue { string key; bytes[] value; }
    struct StringKeyValue { string key; string value; }
    struct StringArrayKeyValue { string key; string[] value; }
    struct AddressItems { AddressKeyValue[] items; AddressArrayKeyValue[] arrayItems; }
    struct UintItems { UintKeyValue[] items; UintArrayKeyValue[] arrayItems; }
    struct IntItems { IntKeyValue[] items; IntArrayKeyValue[] arrayItems; }
    struct BoolItems { BoolKeyValue[] items; BoolArrayKeyValue[] arrayItems; }
    struct Bytes32Items { Bytes32KeyValue[] items; Bytes32ArrayKeyValue[] arrayItems; }
    struct BytesItems { BytesKeyValue[] items; BytesArrayKeyValue[] arrayItems; }
    struct StringItems { StringKeyValue[] items; StringArrayKeyValue[] arrayItems; }
    struct EventLogData {
        AddressItems addressItems;
        UintItems uintItems;
        IntItems intItems;
        BoolItems boolItems;
        Bytes32Items bytes32Items;
        BytesItems bytesItems;
        StringItems stringItems;
    }

    event EventLog(address msgSender, string eventName, string indexed eventNameHash,
        EventLogData eventData);
    event EventLog1(address msgSender, string eventName, string indexed eventNameHash,
        bytes32 indexed topic1, EventLogData eventData);
    event EventLog2(address msgSender, string eventName, string indexed eventNameHash,
        bytes32 indexed topic1, bytes32 indexed topic2, EventLogData eventData);

    // ---- state ------------------------------------------------------------------------------
    struct Market { address indexToken; address longToken; address shortToken; }
    struct Position {
        address account;
        address market;
        address collateralToken;
        bool isLong;
        uint256 sizeInUsd;
        uint256 sizeInTokens;
        uint256 collateralAmount;
        uint256 increasedAtTime;
        uint256 decreasedAtTime;
    }
    struct Trade {
        bytes32 key;
        bytes32 orderKey;
        uint256 sizeDeltaUsd;
        uint256 sizeDeltaInTokens;
        uint256 collateralDeltaAmount;
        uint256 executionPrice;
        uint256 indexMin;
        uint256 indexMax;
        uint256 collMin;
        uint256 collMax;
        uint256 feeAmount;
        int256 pnlUsd;
        uint256 orderType;
    }

    uint256 public constant FLOAT_PRECISION = 1e30;
    uint256 public constant POSITION_FEE_FACTOR = 7e26;        // 0.07 % of size (x 1e30)
    uint256 public constant MIN_COLLATERAL_FACTOR = 1e28;      // 1 % of size (x 1e30)
    uint256 public constant LIQUIDATION = 7;                   // Order.OrderType.Liquidation

    address public gov;
    mapping(address => bool) public isKeeper;
    mapping(address => Market) public markets;
    mapping(address => uint256) public minPrices;              // per unit x 1e30
    mapping(bytes32 => Position) internal positions;
    mapping(bytes32 => uint256) public openInterest;           // key(market, collateral, isLong)
    mapping(bytes32 => uint256) public openInterestInTokens;
    uint256 public orderNonce;

    constructor() {
        gov = msg.sender;
        isKeeper[msg.sender] = true;
    }

    modifier onlyKeeper() {
        require(isKeeper[msg.sender], "Exchange: not a keeper");
        _;
    }

    function setKeeper(address keeper, bool active) external {
        require(msg.sender == gov, "Exchange: forbidden");
        isKeeper[keeper] = active;
    }

    function setPrice(address token, uint256 minPrice) external onlyKeeper {
        require(minPrice > 0, "Exchange: invalid price");
        minPrices[token] = minPrice;
    }

    function maxPrice(address token) public view returns (uint256) {
        return minPrices[token] + minPrices[token] / 2500;        // 0.04 % spread
    }

    // ---- getters shaped like the Reader / DataStore's ---------------------------------------
    function getPositionKey(address account, address market, address collateralToken, bool isLong)
        public pure returns (bytes32)
    {
        return keccak256(abi.encode(account, market, collateralToken, isLong));
    }

    function getPosition(bytes32 key) external view returns (Position memory) {
        return positions[key];
    }

    function openInterestKey(address market, address collateralToken, bool isLong)
        public pure returns (bytes32)
    {
        return keccak256(abi.encode(keccak256(abi.encode("OPEN_INTEREST")), market, collateralToken,
            isLong));
    }

    function getOpenInterest(address market, address collateralToken, bool isLong)
        external view returns (uint256 usd, uint256 inTokens)
    {
        bytes32 k = openInterestKey(market, collateralToken, isLong);
        return (openInterest[k], openInterestInTokens[k]);
    }

    // ---- markets ----------------------------------------------------------------------------
    function createMarket(address marketToken, address indexToken, address longToken,
        address shortToken) external onlyKeeper
    {
        require(markets[marketToken].longToken == address(0), "Exchange: market exists");
        markets[marketToken] = Market(indexToken, longToken, shortToken);
        EventLogData memory d;
        d.addressItems.items = new AddressKeyValue[](4);
        d.addressItems.items[0] = AddressKeyValue("marketToken", marketToken);
        d.addressItems.items[1] = AddressKeyValue("indexToken", indexToken);
        d.addressItems.items[2] = AddressKeyValue("longToken", longToken);
        d.addressItems.items[3] = AddressKeyValue("shortToken", shortToken);
        d.bytes32Items.items = new Bytes32KeyValue[](2);
        d.bytes32Items.items[0] = Bytes32KeyValue("salt", keccak256(abi.encode(marketToken)));
        d.bytes32Items.items[1] = Bytes32KeyValue("marketType", keccak256(abi.encode("basic-v1")));
        emit EventLog1(msg.sender, "MarketCreated", "MarketCreated",
            bytes32(uint256(uint160(marketToken))), d);
    }

    // ---- trading (the keeper executes orders for accounts, as in GMX v2) --------------------
    function increasePosition(address account, address market, address collateralToken,
        bool isLong, uint256 sizeDeltaUsd, uint256 collateralDeltaAmount, uint256 orderType)
        external onlyKeeper
    {
        Market memory m = _market(market, collateralToken);
        Trade memory t = _prices(m, collateralToken, isLong, true);
        t.key = getPositionKey(account, market, collateralToken, isLong);
        t.orderKey = _orderKey();
        t.orderType = orderType;
        t.sizeDeltaUsd = sizeDeltaUsd;
        t.collateralDeltaAmount = collateralDeltaAmount;
        t.sizeDeltaInTokens = sizeDeltaUsd / t.executionPrice;
        t.feeAmount = sizeDeltaUsd * POSITION_FEE_FACTOR / FLOAT_PRECISION / t.collMin;
        Position storage p = positions[t.key];
        if (p.sizeInUsd == 0 && p.collateralAmount == 0) {
            require(sizeDeltaUsd > 0, "Exchange: empty position");
            p.account = account;
            p.market = market;
            p.collateralToken = collateralToken;
            p.isLong = isLong;
        }
        require(p.collateralAmount + collateralDeltaAmount >= t.feeAmount, "Exchange: fees");
        p.sizeInUsd += sizeDeltaUsd;
        p.sizeInTokens += t.sizeDeltaInTokens;
        p.collateralAmount = p.collateralAmount + collateralDeltaAmount - t.feeAmount;
        p.increasedAtTime = block.timestamp;
        _checkCollateral(p, t);
        _updateOpenInterest(market, collateralToken, isLong, int256(sizeDeltaUsd),
            int256(t.sizeDeltaInTokens));
        _emitFees(p, t, true);
        _emitIncrease(p, t);
        _emitOrderExecuted(t, account);
    }

    function decreasePosition(address account, address market, address collateralToken,
        bool isLong, uint256 sizeDeltaUsd, uint256 collateralDeltaAmount, uint256 orderType)
        external onlyKeeper
    {
        require(orderType != LIQUIDATION, "Exchange: use liquidatePosition");
        bytes32 key = getPositionKey(account, market, collateralToken, isLong);
        require(positions[key].sizeInUsd > 0, "Exchange: empty position");
        _decrease(key, sizeDeltaUsd, collateralDeltaAmount, orderType);
    }

    /// @notice True when the collateral left after the position's PnL is under 1 % of its size.
    function isLiquidatable(bytes32 key) public view returns (bool) {
        Position memory p = positions[key];
        if (p.sizeInUsd == 0) return false;
        Trade memory t = _prices(markets[p.market], p.collateralToken, p.isLong, false);
        int256 value = int256(p.collateralAmount * t.collMin) + _pnl(p, p.sizeInTokens,
            p.sizeInUsd, t.executionPrice);
        return value < int256(p.sizeInUsd * MIN_COLLATERAL_FACTOR / FLOAT_PRECISION);
    }

    function liquidatePosition(address account, address market, address collateralToken,
        bool isLong) external onlyKeeper
    {
        bytes32 key = getPositionKey(account, market, collateralToken, isLong);
        require(isLiquidatable(key), "Exchange: not liquidatable");
        _decrease(key, positions[key].sizeInUsd, 0, LIQUIDATION);
    }

    // ---- internals --------------------------------------------------------------------------
    function _market(address market, address collateralToken) internal view returns (Market memory m) {
        m = markets[market];
        require(m.longToken != address(0), "Exchange: unknown market");
        require(collateralToken == m.longToken || collateralToken == m.shortToken,
            "Exchange: invalid collateral");
    }

    function _prices(Market memory m, address collateralToken, bool isLong, bool increase)
        internal view returns (Trade memory t)
    {
        t.indexMin = minPrices[m.indexToken];
        t.indexMax = maxPrice(m.indexToken);
        t.collMin = minPrices[collateralToken];
        t.collMax = maxPrice(collateralToken);
        require(t.indexMin > 0 && t.collMin > 0, "Exchange: no price");
        // the trader gets the worse side of the spread
        t.executionPrice = (isLong == increase) ? t.indexMax : t.indexMin;
    }

    function _orderKey() internal returns (bytes32) {
        orderNonce += 1;
        return keccak256(abi.encode(address(this), orderNonce));
    }

    function _pnl(Position memory p, uint256 tokens, uint256 usd, uint256 price)
        internal pure returns (int256)
    {
        int256 value = int256(tokens * price);
        return p.isLong ? value - int256(usd) : int256(usd) - value;
    }

    function _checkCollateral(Position storage p, Trade memory t) internal view {
        if (p.sizeInUsd == 0) return;
        require(p.collateralAmount * t.collMin * FLOAT_PRECISION >= p.sizeInUsd * MIN_COLLATERAL_FACTOR,
            "Exchange: max leverage exceeded");
    }

    function _decrease(bytes32 key, uint256 sizeDeltaUsd, uint256 collateralDeltaAmount,
        uint256 orderType) internal
    {
        Position storage p = positions[key];
        require(sizeDeltaUsd <= p.sizeInUsd, "Exchange: size too large");
        Trade memory t = _prices(markets[p.market], p.collateralToken, p.isLong, false);
        t.key = key;
        t.orderKey = _orderKey();
        t.orderType = orderType;
        t.sizeDeltaUsd = sizeDeltaUsd;
        bool full = sizeDeltaUsd == p.sizeInUsd;
        t.sizeDeltaInTokens = full ? p.sizeInTokens : p.sizeInTokens * sizeDeltaUsd / p.sizeInUsd;
        t.pnlUsd = _pnl(p, t.sizeDeltaInTokens, sizeDeltaUsd, t.executionPrice);
        t.feeAmount = sizeDeltaUsd * POSITION_FEE_FACTOR / FLOAT_PRECISION / t.collMin;
        // losses and fees come out of the collateral; profits are paid out to the account
        uint256 cost = t.feeAmount;
        if (t.pnlUsd < 0) cost += uint256(-t.pnlUsd) / t.collMin;
        bool insolvent = cost > p.collateralAmount;
        uint256 left = insolvent ? 0 : p.collateralAmount - cost;
        if (full) {
            collateralDeltaAmount = left;
        } else {
            require(collateralDeltaAmount <= left, "Exchange: collateral too large");
        }
        t.collateralDeltaAmount = collateralDeltaAmount;
        p.sizeInUsd -= sizeDeltaUsd;
        p.sizeInTokens -= t.sizeDeltaInTokens;
        p.collateralAmount = left - collateralDeltaAmount;
        p.decreasedAtTime = block.timestamp;
        if (!full) _checkCollateral(p, t);
        if (sizeDeltaUsd > 0) {
            _updateOpenInterest(p.market, p.collateralToken, p.isLong, -int256(sizeDeltaUsd),
                -int256(t.sizeDeltaInTokens));
        }
        if (insolvent) _emitInsolventClose(t, p.collateralAmount + cost);
        _emitFees(p, t, false);
        Position memory snapshot = p;
        if (full) {
            delete positions[key];
            snapshot.sizeInUsd = 0;
            snapshot.sizeInTokens = 0;
            snapshot.collateralAmount = 0;
        }
        _emitDecrease(snapshot, t);
        _emitOrderExecuted(t, snapshot.account);
    }

    function _updateOpenInterest(address market, address collateralToken, bool isLong,
        int256 delta, int256 deltaTokens) internal
    {
        bytes32 k = openInterestKey(market, collateralToken, isLong);
        openInterest[k] = uint256(int256(openInterest[k]) + delta);
        openInterestInTokens[k] = uint256(int256(openInterestInTokens[k]) + deltaTokens);
        _emitOpenInterest("OpenInterestUpdated", market, collateralToken, isLong, delta,
            openInterest[k]);
        _emitOpenInterest("OpenInterestInTokensUpdated", market, collateralToken, isLong,
            deltaTokens, openInterestInTokens[k]);
    }

    function _emitOpenInterest(string memory name, address market, address collateralToken,
        bool isLong, int256 delta, uint256 nextValue) internal
    {
        EventLogData memory d;
        d.addressItems.items = new AddressKeyValue[](2);
        d.addressItems.items[0] = AddressKeyValue("market", market);
        d.addressItems.items[1] = AddressKeyValue("collateralToken", collateralToken);
        d.uintItems.items = new UintKeyValue[](1);
        d.uintItems.items[0] = UintKeyValue("nextValue", nextValue);
        d.intItems.items = new IntKeyValue[](1);
        d.intItems.items[0] = IntKeyValue("delta", delta);
        d.boolItems.items = new BoolKeyValue[](1);
        d.boolItems.items[0] = BoolKeyValue("isLong", isLong);
        emit EventLog1(msg.sender, name, name, bytes32(uint256(uint160(market))), d);
    }

    function _positionItems(Position memory p, Trade memory t, uint256 uints)
        internal pure returns (EventLogData memory d)
    {
        d.addressItems.items = new AddressKeyValue[](3);
        d.addressItems.items[0] = AddressKeyValue("account", p.account);
        d.addressItems.items[1] = AddressKeyValue("market", p.market);
        d.addressItems.items[2] = AddressKeyValue("collateralToken", p.collateralToken);
        d.uintItems.items = new UintKeyValue[](uints);
        d.uintItems.items[0] = UintKeyValue("sizeInUsd", p.sizeInUsd);
        d.uintItems.items[1] = UintKeyValue("sizeInTokens", p.sizeInTokens);
        d.uintItems.items[2] = UintKeyValue("collateralAmount", p.collateralAmount);
        d.uintItems.items[3] = UintKeyValue("borrowingFactor", 0);
        d.uintItems.items[4] = UintKeyValue("fundingFeeAmountPerSize", 0);
        d.uintItems.items[5] = UintKeyValue("longTokenClaimableFundingAmountPerSize", 0);
        d.uintItems.items[6] = UintKeyValue("shortTokenClaimableFundingAmountPerSize", 0);
        d.uintItems.items[7] = UintKeyValue("executionPrice", t.executionPrice);
        d.uintItems.items[8] = UintKeyValue("indexTokenPrice.max", t.indexMax);
        d.uintItems.items[9] = UintKeyValue("indexTokenPrice.min", t.indexMin);
        d.uintItems.items[10] = UintKeyValue("collateralTokenPrice.max", t.collMax);
        d.uintItems.items[11] = UintKeyValue("collateralTokenPrice.min", t.collMin);
        d.uintItems.items[12] = UintKeyValue("sizeDeltaUsd", t.sizeDeltaUsd);
        d.uintItems.items[13] = UintKeyValue("sizeDeltaInTokens", t.sizeDeltaInTokens);
        d.boolItems.items = new BoolKeyValue[](1);
        d.boolItems.items[0] = BoolKeyValue("isLong", p.isLong);
        d.bytes32Items.items = new Bytes32KeyValue[](2);
        d.bytes32Items.items[0] = Bytes32KeyValue("orderKey", t.orderKey);
        d.bytes32Items.items[1] = Bytes32KeyValue("positionKey", t.key);
    }

    function _emitIncrease(Position memory p, Trade memory t) internal {
        EventLogData memory d = _positionItems(p, t, 16);
        d.uintItems.items[14] = UintKeyValue("orderType", t.orderType);
        d.uintItems.items[15] = UintKeyValue("increasedAtTime", p.increasedAtTime);
        d.intItems.items = new IntKeyValue[](3);
        d.intItems.items[0] = IntKeyValue("collateralDeltaAmount", int256(t.collateralDeltaAmount));
        d.intItems.items[1] = IntKeyValue("pendingPriceImpactUsd", 0);
        d.intItems.items[2] = IntKeyValue("pendingPriceImpactAmount", 0);
        emit EventLog1(msg.sender, "PositionIncrease", "PositionIncrease",
            bytes32(uint256(uint160(p.account))), d);
    }

    function _emitDecrease(Position memory p, Trade memory t) internal {
        EventLogData memory d = _positionItems(p, t, 18);
        d.uintItems.items[14] = UintKeyValue("collateralDeltaAmount", t.collateralDeltaAmount);
        d.uintItems.items[15] = UintKeyValue("values.priceImpactDiffUsd", 0);
        d.uintItems.items[16] = UintKeyValue("orderType", t.orderType);
        d.uintItems.items[17] = UintKeyValue("decreasedAtTime", p.decreasedAtTime);
        d.intItems.items = new IntKeyValue[](5);
        d.intItems.items[0] = IntKeyValue("priceImpactUsd", 0);
        d.intItems.items[1] = IntKeyValue("basePnlUsd", t.pnlUsd);
        d.intItems.items[2] = IntKeyValue("uncappedBasePnlUsd", t.pnlUsd);
        d.intItems.items[3] = IntKeyValue("proportionalPendingImpactUsd", 0);
        d.intItems.items[4] = IntKeyValue("totalImpactUsd", 0);
        emit EventLog1(msg.sender, "PositionDecrease", "PositionDecrease",
            bytes32(uint256(uint160(p.account))), d);
    }

    function _emitFees(Position memory p, Trade memory t, bool isIncrease) internal {
        EventLogData memory d;
        d.bytes32Items.items = new Bytes32KeyValue[](3);
        d.bytes32Items.items[0] = Bytes32KeyValue("orderKey", t.orderKey);
        d.bytes32Items.items[1] = Bytes32KeyValue("positionKey", t.key);
        d.bytes32Items.items[2] = Bytes32KeyValue("referralCode", bytes32(0));
        d.addressItems.items = new AddressKeyValue[](5);
        d.addressItems.items[0] = AddressKeyValue("market", p.market);
        d.addressItems.items[1] = AddressKeyValue("collateralToken", p.collateralToken);
        d.addressItems.items[2] = AddressKeyValue("affiliate", address(0));
        d.addressItems.items[3] = AddressKeyValue("trader", p.account);
        d.addressItems.items[4] = AddressKeyValue("uiFeeReceiver", address(0));
        string[23] memory names = ["collateralTokenPrice.min", "collateralTokenPrice.max",
            "tradeSizeUsd", "fundingFeeAmount", "claimableLongTokenAmount",
            "claimableShortTokenAmount", "latestFundingFeeAmountPerSize",
            "latestLongTokenClaimableFundingAmountPerSize",
            "latestShortTokenClaimableFundingAmountPerSize", "borrowingFeeUsd",
            "borrowingFeeAmount", "borrowingFeeReceiverFactor", "borrowingFeeAmountForFeeReceiver",
            "positionFeeFactor", "protocolFeeAmount", "positionFeeReceiverFactor",
            "feeReceiverAmount", "feeAmountForPool", "positionFeeAmountForPool",
            "positionFeeAmount", "totalCostAmount", "uiFeeReceiverFactor", "uiFeeAmount"];
        d.uintItems.items = new UintKeyValue[](23);
        for (uint256 i = 0; i < 23; i++) d.uintItems.items[i] = UintKeyValue(names[i], 0);
        d.uintItems.items[0].value = t.collMin;
        d.uintItems.items[1].value = t.collMax;
        d.uintItems.items[2].value = t.sizeDeltaUsd;
        d.uintItems.items[13].value = POSITION_FEE_FACTOR;
        d.uintItems.items[19].value = t.feeAmount;
        d.uintItems.items[20].value = t.feeAmount;
        d.boolItems.items = new BoolKeyValue[](1);
        d.boolItems.items[0] = BoolKeyValue("isIncrease", isIncrease);
        emit EventLog1(msg.sender, "PositionFeesCollected", "PositionFeesCollected",
            bytes32(uint256(uint160(p.market))), d);
    }

    function _emitInsolventClose(Trade memory t, uint256 collateralAmount) internal {
        EventLogData memory d;
        d.uintItems.items = new UintKeyValue[](2);
        d.uintItems.items[0] = UintKeyValue("positionCollateralAmount", collateralAmount);
        d.uintItems.items[1] = UintKeyValue("remainingCostUsd", 0);
        d.intItems.items = new IntKeyValue[](1);
        d.intItems.items[0] = IntKeyValue("basePnlUsd", t.pnlUsd);
        d.bytes32Items.items = new Bytes32KeyValue[](1);
        d.bytes32Items.items[0] = Bytes32KeyValue("orderKey", t.orderKey);
        d.stringItems.items = new StringKeyValue[](1);
        d.stringItems.items[0] = StringKeyValue("step", "pnl");
        emit EventLog(msg.sender, "InsolventClose", "InsolventClose", d);
    }

    function _emitOrderExecuted(Trade memory t, address account) internal {
        EventLogData memory d;
        d.bytes32Items.items = new Bytes32KeyValue[](1);
        d.bytes32Items.items[0] = Bytes32KeyValue("key", t.orderKey);
        d.addressItems.items = new AddressKeyValue[](1);
        d.addressItems.items[0] = AddressKeyValue("account", account);
        d.uintItems.items = new UintKeyValue[](1);
        d.uintItems.items[0] = UintKeyValue("secondaryOrderType", 0);
        d.bytes32Items.arrayItems = new Bytes32ArrayKeyValue[](1);
        d.bytes32Items.arrayItems[0] = Bytes32ArrayKeyValue("swapPath", new bytes32[](0));
        emit EventLog2(msg.sender, "OrderExecuted", "OrderExecuted", t.orderKey,
            bytes32(uint256(uint160(account))), d);
    }
}
