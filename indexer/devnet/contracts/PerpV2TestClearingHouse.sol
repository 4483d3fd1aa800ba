// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Perpetual-Protocol-v2-style test clearing house for perp-indexer (our own code).
/// @notice Emits exactly the Curie ClearingHouse events (same declarations, same order in a
/// liquidation: the trader's PositionChanged, the liquidator's PositionChanged taking the
/// position over, then PositionLiquidated), 1e18 amounts, signed taker sizes (+ long). Trades
/// fill at the set price (no AMM); margin is account-wide, credited in USD without transfers:
/// deposit and withdraw take USDC amounts (6 decimals, as Perp v2's Vault.deposit), the account
/// value is kept with 18 decimals (as the ClearingHouse's settlement-token amounts).
/// Getters shaped like AccountBalance: getTakerPositionSize / getTakerOpenNotional.
contract PerpV2TestClearingHouse {
    struct Taker {
        int256 size;
        int256 openNotional;   // negative when long, as in Perp v2
        int256 realizedPnl;    // sum of the changes' realizedPnl
    }

    int256 public constant ONE = 1e18;
    int256 public constant USDC_TO_ONE = 1e12;         // 6-decimal USDC -> 18 decimals
    int256 public constant FEE_BPS = 10;               // 0.1 % of the exchanged notional
    int256 public constant MM_RATIO = 0.0625e18;       // maintenance margin 6.25 %
    int256 public constant LIQUIDATION_PENALTY = 0.025e18;

    address public owner;
    mapping(address => bool) public isLiquidator;
    mapping(address => uint256) public prices;         // USD x 1e18 per whole base token
    mapping(address => bool) public closedMarkets;
    address[] public baseTokens;
    mapping(address => mapping(address => Taker)) internal takers;
    mapping(address => int256) public collateral;      // account value in USD x 1e18
    mapping(address => uint256) public longSize;       // sum of long sizes per base token
    mapping(address => uint256) public shortSize;

    event PositionChanged(address indexed trader, address indexed baseToken, int256 exchangedPositionSize,
        int256 exchangedPositionNotional, uint256 fee, int256 openNotional, int256 realizedPnl,
        uint256 sqrtPriceAfterX96);
    event PositionLiquidated(address indexed trader, address indexed baseToken, uint256 positionNotional,
        uint256 positionSize, uint256 liquidationFee, address liquidator);
    event PositionClosed(address indexed trader, address indexed baseToken, int256 closedPositionSize,
        int256 closedPositionNotional, int256 openNotional, int256 realizedPnl, uint256 closedPrice);

    constructor() {
        owner = msg.sender;
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "CH: forbidden");
        _;
    }

    function addBaseToken(address baseToken, uint256 price) external onlyOwner {
        require(prices[baseToken] == 0, "CH: exists");
        baseTokens.push(baseToken);
        prices[baseToken] = price;
    }

    function setPrice(address baseToken, uint256 price) external onlyOwner {
        require(prices[baseToken] > 0 && price > 0, "CH: price");
        prices[baseToken] = price;
    }

    function setLiquidator(address account, bool active) external onlyOwner {
        isLiquidator[account] = active;
    }

    function deposit(uint256 amountUsdc) external {
        collateral[msg.sender] += int256(amountUsdc) * USDC_TO_ONE;
    }

    function withdraw(uint256 amountUsdc) external {
        collateral[msg.sender] -= int256(amountUsdc) * USDC_TO_ONE;
        require(_accountValue(msg.sender) >= _requiredMargin(msg.sender, ONE / 10), "CH: margin");
    }

    /// @notice Trade ``sizeDelta`` base tokens (+ buy / - sell) at the set price.
    function openPosition(address baseToken, int256 sizeDelta) external {
        require(prices[baseToken] > 0 && !closedMarkets[baseToken], "CH: market");
        require(sizeDelta != 0, "CH: zero");
        uint256 price = prices[baseToken];
        int256 notional = _abs(sizeDelta) * int256(price) / ONE;
        _modify(msg.sender, baseToken, sizeDelta, price, uint256(notional * FEE_BPS / 10_000));
        // initial margin 10 %
        require(_accountValue(msg.sender) >= _requiredMargin(msg.sender, ONE / 10), "CH: margin");
    }

    function liquidate(address trader, address baseToken) external {
        require(isLiquidator[msg.sender], "CH: not liquidator");
        require(isLiquidatable(trader), "CH: enough margin");
        int256 size = takers[trader][baseToken].size;
        require(size != 0, "CH: no position");
        uint256 price = prices[baseToken];
        uint256 notional = uint256(_abs(size) * int256(price) / ONE);
        uint256 penalty = notional * uint256(LIQUIDATION_PENALTY) / uint256(ONE);
        _modify(trader, baseToken, -size, price, 0);
        _modify(msg.sender, baseToken, size, price, 0);
        collateral[trader] -= int256(penalty);
        collateral[msg.sender] += int256(penalty);
        emit PositionLiquidated(trader, baseToken, notional, uint256(_abs(size)), penalty, msg.sender);
    }

    /// @notice Close a market at ``price``: its positions can then only be quit.
    function closeMarket(address baseToken, uint256 price) external onlyOwner {
        closedMarkets[baseToken] = true;
        prices[baseToken] = price;
    }

    function quitMarket(address trader, address baseToken) external {
        require(closedMarkets[baseToken], "CH: market open");
        Taker storage t = takers[trader][baseToken];
        int256 size = t.size;
        require(size != 0, "CH: no position");
        uint256 price = prices[baseToken];
        int256 closedNotional = size * int256(price) / ONE;
        int256 openNotional = t.openNotional;
        int256 pnl = openNotional + closedNotional;
        _resize(baseToken, size, 0);
        t.size = 0;
        t.openNotional = 0;
        t.realizedPnl += pnl;
        collateral[trader] += pnl;
        emit PositionClosed(trader, baseToken, size, closedNotional, openNotional, pnl, price);
    }

    // -- views ----------------------------------------------------------------------------

    function getTakerPositionSize(address trader, address baseToken) external view returns (int256) {
        return takers[trader][baseToken].size;
    }

    function getTakerOpenNotional(address trader, address baseToken) external view returns (int256) {
        return takers[trader][baseToken].openNotional;
    }

    function getRealizedPnl(address trader, address baseToken) external view returns (int256) {
        return takers[trader][baseToken].realizedPnl;
    }

    function getOpenInterest(address baseToken) external view returns (uint256, uint256) {
        return (longSize[baseToken], shortSize[baseToken]);
    }

    function isLiquidatable(address trader) public view returns (bool) {
        return _accountValue(trader) < _requiredMargin(trader, MM_RATIO);
    }

    // -- internals ------------------------------------------------------------------------

    function _modify(address trader, address baseToken, int256 exchanged, uint256 price, uint256 fee)
        internal
    {
        Taker storage t = takers[trader][baseToken];
        int256 size = t.size;
        int256 openNotional = t.openNotional;
        int256 exchangedNotional = -(exchanged * int256(price)) / ONE;
        int256 pnl = 0;
        if (size == 0 || (size > 0) == (exchanged > 0)) {
            openNotional += exchangedNotional;
        } else if (_abs(exchanged) <= _abs(size)) {
            int256 reduced = openNotional * _abs(exchanged) / _abs(size);
            pnl = reduced + exchangedNotional;
            openNotional -= reduced;
        } else {
            int256 closedPart = exchangedNotional * _abs(size) / _abs(exchanged);
            pnl = openNotional + closedPart;
            openNotional = exchangedNotional - closedPart;
        }
        int256 after_ = size + exchanged;
        if (after_ == 0) {
            openNotional = 0;
        }
        _resize(baseToken, size, after_);
        t.size = after_;
        t.openNotional = openNotional;
        t.realizedPnl += pnl;
        collateral[trader] += pnl - int256(fee);
        emit PositionChanged(trader, baseToken, exchanged, exchangedNotional, fee, openNotional, pnl,
            _sqrtPriceX96(price));
    }

    function _resize(address baseToken, int256 before, int256 after_) internal {
        if (before > 0) longSize[baseToken] -= uint256(before);
        if (before < 0) shortSize[baseToken] -= uint256(-before);
        if (after_ > 0) longSize[baseToken] += uint256(after_);
        if (after_ < 0) shortSize[baseToken] += uint256(-after_);
    }

    function _accountValue(address trader) internal view returns (int256 value) {
        value = collateral[trader];
        for (uint256 i = 0; i < baseTokens.length; i++) {
            Taker storage t = takers[trader][baseTokens[i]];
            if (t.size != 0) {
                value += t.openNotional + t.size * int256(prices[baseTokens[i]]) / ONE;
            }
        }
    }

    function _requiredMargin(address trader, int256 ratio) internal view returns (int256 required) {
        for (uint256 i = 0; i < baseTokens.length; i++) {
            int256 size = takers[trader][baseTokens[i]].size;
            required += _abs(size) * int256(prices[baseTokens[i]]) / ONE * ratio / ONE;
        }
    }

    /// @dev sqrt(price / 1e18) x 2^96, the Uniswap v3 form of a 1e18 price.
    function _sqrtPriceX96(uint256 price) internal pure returns (uint256) {
        return _sqrt((price << 64) / 1e18) << 64;
    }

    function _sqrt(uint256 x) internal pure returns (uint256 y) {
        if (x == 0) return 0;
        uint256 z = (x + 1) / 2;
        y = x;
        while (z < y) {
            y = z;
            z = (x / z + z) / 2;
        }
    }

    function _abs(int256 x) internal pure returns (int256) {
        return x >= 0 ? x : -x;
    }
}
