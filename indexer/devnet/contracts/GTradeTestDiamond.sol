// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title gTrade-v10-style test diamond for perp-indexer (our own code, one contract, no facets).
/// @notice Emits exactly gTrade v10's trade events (same declarations, same struct layouts, same
/// order: TradeStored then MarketExecuted on an open; TradeClosed then MarketExecuted or
/// LimitExecuted on a close) and keeps the trades with a getTrade(user, index) getter. Trades are
/// (user, index); a pending limit order is a stored trade with tradeType 1 that, once executed,
/// is closed and replaced by a new trade. Size in collateral units is collateral * leverage / 1e3
/// (leverage 1e3 precision), summed per (collateralIndex, pairIndex, side) as open interest.
/// Prices: pairs 1e10, collaterals in USD 1e8. No tokens move; callers are trusted.
contract GTradeTestDiamond {
    struct Id {
        address user;
        uint32 index;
    }

    struct Trade {
        address user;
        uint32 index;
        uint16 pairIndex;
        uint24 leverage;
        bool long;
        bool isOpen;
        uint8 collateralIndex;
        uint8 tradeType;
        uint120 collateralAmount;
        uint64 openPrice;
        uint64 tp;
        uint64 sl;
        bool isCounterTrade;
        uint160 positionSizeToken;
        uint24 __placeholder;
    }

    struct TradeInfo {
        uint32 createdBlock;
        uint32 tpLastUpdatedBlock;
        uint32 slLastUpdatedBlock;
        uint16 maxSlippageP;
        uint48 lastOiUpdateTs;
        uint48 collateralPriceUsd;
        uint8 contractsVersion;
        uint32 lastPosIncreaseBlock;
        uint8 __placeholder;
    }

    struct GroupLiquidationParams {
        uint40 maxLiqSpreadP;
        uint40 startLiqThresholdP;
        uint40 endLiqThresholdP;
        uint24 startLeverage;
        uint24 endLeverage;
    }

    struct TradePriceImpact {
        uint256 positionSizeToken;
        int256 fixedSpreadP;
        int256 cumulVolPriceImpactP;
        int256 skewPriceImpactP;
        int256 totalPriceImpactP;
        uint64 priceAfterImpact;
    }

    event MarketExecuted(Id orderId, address indexed user, uint32 indexed index, Trade t, bool open,
        uint256 oraclePrice, uint256 marketPrice, uint256 liqPrice, TradePriceImpact priceImpact,
        int256 percentProfit, uint256 amountSentToTrader, uint256 collateralPriceUsd);
    event LimitExecuted(Id orderId, address indexed user, uint32 indexed index, uint32 indexed limitIndex,
        Trade t, address triggerCaller, uint8 orderType, uint256 oraclePrice, uint256 marketPrice,
        uint256 liqPrice, TradePriceImpact priceImpact, int256 percentProfit, uint256 amountSentToTrader,
        uint256 collateralPriceUsd, bool exactExecution);
    event TradeStored(address indexed user, uint32 indexed index, Trade trade, TradeInfo tradeInfo,
        GroupLiquidationParams liquidationParams);
    event TradeClosed(address indexed user, uint32 indexed index, bool isPnlPositive);
    event TradePositionUpdated(address indexed user, uint32 indexed index, uint120 collateralAmount,
        uint24 leverage, uint64 openPrice, uint64 newSl, uint160 newPositionSizeToken,
        uint8 pendingOrderType, bool isPnlPositive);
    event TradeCollateralUpdated(address indexed user, uint32 indexed index, uint120 collateralAmount);

    uint8 constant LIMIT_OPEN = 2;
    uint8 constant LIQ_CLOSE = 6;
    uint8 constant UPDATE_LEVERAGE = 7;
    uint8 constant MARKET_PARTIAL_OPEN = 8;
    uint8 constant MARKET_PARTIAL_CLOSE = 9;

    address public keeper;
    mapping(uint16 => uint64) public pairPrice;                  // 1e10
    mapping(uint8 => uint48) public collateralPriceUsd;          // 1e8
    mapping(address => uint32) public currentIndex;
    mapping(address => mapping(uint32 => Trade)) internal trades;
    mapping(address => mapping(uint32 => TradeInfo)) internal infos;
    mapping(uint8 => mapping(uint16 => uint256)) public oiLong;  // collateral units
    mapping(uint8 => mapping(uint16 => uint256)) public oiShort;

    constructor() {
        keeper = msg.sender;
    }

    modifier onlyKeeper() {
        require(msg.sender == keeper, "keeper");
        _;
    }

    // -- admin -------------------------------------------------------------------------------

    function setPairPrice(uint16 pairIndex, uint64 price) external onlyKeeper {
        pairPrice[pairIndex] = price;
    }

    function setCollateralPriceUsd(uint8 collateralIndex, uint48 price) external onlyKeeper {
        collateralPriceUsd[collateralIndex] = price;
    }

    // -- views -------------------------------------------------------------------------------

    function getTrade(address user, uint32 index) external view returns (Trade memory) {
        return trades[user][index];
    }

    function getTradeInfo(address user, uint32 index) external view returns (TradeInfo memory) {
        return infos[user][index];
    }

    function getPairOi(uint8 collateralIndex, uint16 pairIndex) external view returns (uint256, uint256) {
        return (oiLong[collateralIndex][pairIndex], oiShort[collateralIndex][pairIndex]);
    }

    function positionSizeCollateral(Trade memory t) public pure returns (uint256) {
        return uint256(t.collateralAmount) * t.leverage / 1e3;
    }

    /// Liquidation at a 90 % loss of collateral: price moved 0.9 / leverage against the trade.
    function liqPrice(Trade memory t) public pure returns (uint256) {
        uint256 move = uint256(t.openPrice) * 900 / t.leverage;
        return t.long ? (move < t.openPrice ? t.openPrice - move : 0) : t.openPrice + move;
    }

    function isLiquidatable(address user, uint32 index) external view returns (bool) {
        Trade memory t = trades[user][index];
        if (!t.isOpen || t.tradeType != 0) return false;
        uint256 p = pairPrice[t.pairIndex];
        return t.long ? p <= liqPrice(t) : p >= liqPrice(t);
    }

    // -- internals ---------------------------------------------------------------------------

    function _addOi(Trade memory t, bool add) internal {
        uint256 size = positionSizeCollateral(t);
        mapping(uint16 => uint256) storage book = t.long ? oiLong[t.collateralIndex] : oiShort[t.collateralIndex];
        book[t.pairIndex] = add ? book[t.pairIndex] + size : book[t.pairIndex] - size;
    }

    function _sizeToken(Trade memory t) internal view returns (uint160) {
        return uint160(positionSizeCollateral(t) * collateralPriceUsd[t.collateralIndex] * 100 / t.openPrice);
    }

    function _impact(Trade memory t) internal pure returns (TradePriceImpact memory) {
        return TradePriceImpact(t.positionSizeToken, 0, 0, 0, 0, t.openPrice);
    }

    function _store(address user, uint16 pairIndex, uint24 leverage, bool long, uint8 collateralIndex,
        uint8 tradeType, uint120 collateral, uint64 openPrice) internal returns (Trade memory t) {
        require(leverage >= 1100 && collateral > 0 && openPrice > 0, "params");
        require(collateralPriceUsd[collateralIndex] > 0, "collateral");
        uint32 index = currentIndex[user]++;
        t = Trade(user, index, pairIndex, leverage, long, true, collateralIndex, tradeType, collateral,
            openPrice, 0, 0, false, 0, 0);
        t.positionSizeToken = _sizeToken(t);
        TradeInfo memory info = TradeInfo(uint32(block.number), uint32(block.number), uint32(block.number),
            1000, uint48(block.timestamp), collateralPriceUsd[collateralIndex], 2, uint32(block.number), 0);
        trades[user][index] = t;
        infos[user][index] = info;
        if (tradeType == 0) _addOi(t, true);
        emit TradeStored(user, index, t, info, GroupLiquidationParams(0, 0, 0, 0, 0));
    }

    function _update(Trade storage s, uint120 collateral, uint24 leverage, uint64 openPrice, uint8 orderType) internal {
        require(s.isOpen && s.tradeType == 0, "no trade");
        require(collateral > 0 && leverage >= 1100, "params");
        _addOi(s, false);
        s.collateralAmount = collateral;
        s.leverage = leverage;
        s.openPrice = openPrice;
        s.positionSizeToken = _sizeToken(s);
        _addOi(s, true);
        emit TradePositionUpdated(s.user, s.index, collateral, leverage, openPrice, s.sl, s.positionSizeToken,
            orderType, false);
    }

    function _close(address user, uint32 index) internal returns (Trade memory t, bool profit) {
        Trade storage s = trades[user][index];
        require(s.isOpen, "closed");
        t = s;
        s.isOpen = false;
        if (t.tradeType == 0) _addOi(t, false);
        uint64 p = pairPrice[t.pairIndex];
        profit = t.long ? p > t.openPrice : p < t.openPrice;
        emit TradeClosed(user, index, profit);
    }

    // -- trading -----------------------------------------------------------------------------

    /// A market order, filled at the pair price.
    function openTrade(uint16 pairIndex, uint24 leverage, bool long, uint8 collateralIndex, uint120 collateral)
        external returns (uint32)
    {
        uint64 price = pairPrice[pairIndex];
        Trade memory t = _store(msg.sender, pairIndex, leverage, long, collateralIndex, 0, collateral, price);
        emit MarketExecuted(Id(t.user, t.index), t.user, t.index, t, true, price, price, liqPrice(t), _impact(t),
            0, 0, collateralPriceUsd[collateralIndex]);
        return t.index;
    }

    /// A pending limit order (tradeType 1): no position, no open interest until executed.
    function placeLimit(uint16 pairIndex, uint24 leverage, bool long, uint8 collateralIndex, uint120 collateral,
        uint64 openPrice) external returns (uint32)
    {
        return _store(msg.sender, pairIndex, leverage, long, collateralIndex, 1, collateral, openPrice).index;
    }

    function cancelLimit(uint32 index) external {
        require(trades[msg.sender][index].tradeType == 1, "not a limit");
        _close(msg.sender, index);
    }

    /// The keeper executes a limit order: the order is closed and a new trade stored.
    function executeLimit(address user, uint32 limitIndex) external onlyKeeper {
        Trade memory o = trades[user][limitIndex];
        require(o.isOpen && o.tradeType == 1, "not a limit");
        _close(user, limitIndex);
        uint64 price = pairPrice[o.pairIndex];
        Trade memory t = _store(user, o.pairIndex, o.leverage, o.long, o.collateralIndex, 0, o.collateralAmount, price);
        emit LimitExecuted(Id(user, limitIndex), user, t.index, limitIndex, t, msg.sender, LIMIT_OPEN, price, price,
            liqPrice(t), _impact(t), 0, 0, collateralPriceUsd[t.collateralIndex], true);
    }

    /// Add collateral at a leverage: size grows by addCollateral * leverage / 1e3, open price
    /// becomes the size-weighted average (v10 partial open).
    function increaseSize(uint32 index, uint120 addCollateral, uint24 leverage) external {
        Trade storage s = trades[msg.sender][index];
        uint256 oldSize = positionSizeCollateral(s);
        uint256 addSize = uint256(addCollateral) * leverage / 1e3;
        uint120 collateral = s.collateralAmount + addCollateral;
        uint64 price = pairPrice[s.pairIndex];
        uint64 openPrice = uint64((oldSize * s.openPrice + addSize * price) / (oldSize + addSize));
        _update(s, collateral, uint24((oldSize + addSize) * 1e3 / collateral), openPrice, MARKET_PARTIAL_OPEN);
    }

    /// Take collateral out and/or lower the leverage (v10 partial close).
    function decreaseSize(uint32 index, uint120 collateralDelta, uint24 leverageDelta) external {
        Trade storage s = trades[msg.sender][index];
        _update(s, s.collateralAmount - collateralDelta, s.leverage - leverageDelta, s.openPrice,
            MARKET_PARTIAL_CLOSE);
    }

    /// Change leverage keeping the size: collateral moves in or out.
    function updateLeverage(uint32 index, uint24 leverage) external {
        Trade storage s = trades[msg.sender][index];
        uint256 size = positionSizeCollateral(s);
        _update(s, uint120(size * 1e3 / leverage), leverage, s.openPrice, UPDATE_LEVERAGE);
    }

    /// The keeper charges a fee from a trade's collateral (a failed request's gov fee).
    function chargeFee(address user, uint32 index, uint120 fee) external onlyKeeper {
        Trade storage s = trades[user][index];
        require(s.isOpen && s.tradeType == 0 && fee < s.collateralAmount, "fee");
        _addOi(s, false);
        s.collateralAmount -= fee;
        _addOi(s, true);
        emit TradeCollateralUpdated(user, index, s.collateralAmount);
    }

    function closeTrade(uint32 index) external {
        require(trades[msg.sender][index].tradeType == 0, "not a trade");
        (Trade memory t, bool profit) = _close(msg.sender, index);
        uint64 price = pairPrice[t.pairIndex];
        emit MarketExecuted(Id(t.user, t.index), t.user, t.index, t, false, price, price, liqPrice(t), _impact(t),
            profit ? int256(1) : -1, t.collateralAmount, collateralPriceUsd[t.collateralIndex]);
    }

    /// The keeper closes a trade on a trigger: 4 take profit, 5 stop loss, 6 liquidation.
    function triggerClose(address user, uint32 index, uint8 orderType) external onlyKeeper {
        require(orderType >= 4 && orderType <= LIQ_CLOSE, "order type");
        require(trades[user][index].tradeType == 0, "not a trade");
        if (orderType == LIQ_CLOSE) require(this.isLiquidatable(user, index), "not liquidatable");
        (Trade memory t, ) = _close(user, index);
        uint64 price = pairPrice[t.pairIndex];
        emit LimitExecuted(Id(user, index), user, index, index, t, msg.sender, orderType, price, price, liqPrice(t),
            _impact(t), orderType == LIQ_CLOSE ? int256(-90) : int256(0), 0, collateralPriceUsd[t.collateralIndex],
            true);
    }
}
