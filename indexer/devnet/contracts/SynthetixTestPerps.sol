// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Synthetix-Perps-v2-style test market manager and market for perp-indexer (our own code).
/// @notice The manager announces markets with the FuturesMarketManager's MarketAdded /
/// MarketRemoved; each market emits exactly the PerpsV2 market events itself (the log address
/// is the market, as with the real proxies): PositionModified, PositionLiquidated,
/// FundingRecomputed, MarginTransferred, in the current versions or, for a market deployed with
/// ``legacy``, the versions before April 2023 (PositionModified without skew, PositionLiquidated
/// with one fee). Signed sizes (+ long), 1e18 amounts, margin in sUSD credited without transfers.
/// Getters shaped like the real ones: positions(account), marketSize(), marketSkew().
contract SynthetixTestMarketManager {
    address public owner;
    address[] public markets;

    event MarketAdded(address market, bytes32 indexed asset, bytes32 indexed marketKey);
    event MarketRemoved(address market, bytes32 indexed asset, bytes32 indexed marketKey);

    constructor() {
        owner = msg.sender;
    }

    function addMarket(address market, bytes32 asset, bytes32 marketKey) external {
        require(msg.sender == owner, "Only the contract owner may perform this action");
        markets.push(market);
        emit MarketAdded(market, asset, marketKey);
    }

    function removeMarket(address market, bytes32 asset, bytes32 marketKey) external {
        require(msg.sender == owner, "Only the contract owner may perform this action");
        emit MarketRemoved(market, asset, marketKey);
    }
}

contract SynthetixTestPerpsMarket {
    struct Position {
        uint64 id;
        uint64 lastFundingIndex;
        uint128 margin;
        uint128 lastPrice;
        int128 size;
    }

    int256 internal constant UNIT = 1e18;
    int256 public constant TAKER_FEE = 0.001e18;        // 0.1 % of the traded notional
    int256 public constant MAX_LEVERAGE = 25;
    int256 public constant LIQUIDATION_BUFFER = 0.02e18; // liquidatable below 2 % of notional
    uint256 public constant LIQUIDATION_FEE = 20e18;     // flat keeper fee

    address public owner;
    bool public immutable legacy;
    uint256 public price;
    uint64 internal nextId = 1;
    int256[] internal fundingSequence;
    uint128 public marketSize;
    int128 public marketSkew;
    mapping(address => Position) public positions;

    event PositionModified(uint256 indexed id, address indexed account, uint256 margin, int256 size,
        int256 tradeSize, uint256 lastPrice, uint256 fundingIndex, uint256 fee, int256 skew);
    event PositionModified(uint256 indexed id, address indexed account, uint256 margin, int256 size,
        int256 tradeSize, uint256 lastPrice, uint256 fundingIndex, uint256 fee);
    event PositionLiquidated(uint256 id, address account, address liquidator, int256 size,
        uint256 price, uint256 flaggerFee, uint256 liquidatorFee, uint256 stakersFee);
    event PositionLiquidated(uint256 id, address account, address liquidator, int256 size,
        uint256 price, uint256 fee);
    event FundingRecomputed(int256 funding, int256 fundingRate, uint256 index, uint256 timestamp);
    event MarginTransferred(address indexed account, int256 marginDelta);

    constructor(uint256 startPrice, bool legacyEvents) {
        owner = msg.sender;
        price = startPrice;
        legacy = legacyEvents;
        fundingSequence.push(0);
    }

    function setPrice(uint256 newPrice) external {
        require(msg.sender == owner && newPrice > 0, "forbidden");
        price = newPrice;
    }

    function transferMargin(int256 marginDelta) external {
        Position storage p = positions[msg.sender];
        _settlePnl(p);
        int256 margin = int256(uint256(p.margin)) + marginDelta;
        require(margin >= 0, "Insufficient margin");
        p.margin = uint128(uint256(margin));
        _checkLeverage(p);
        emit MarginTransferred(msg.sender, marginDelta);
        _emitModified(p, msg.sender, 0, 0);
    }

    function modifyPosition(int256 sizeDelta) external {
        require(sizeDelta != 0, "Cannot submit empty order");
        _trade(msg.sender, sizeDelta, true);
    }

    function closePosition() external {
        int256 size = positions[msg.sender].size;
        require(size != 0, "No position open");
        _trade(msg.sender, -size, false);
    }

    function canLiquidate(address account) public view returns (bool) {
        Position storage p = positions[account];
        if (p.size == 0) return false;
        int256 remaining = int256(uint256(p.margin)) + _pnl(p);
        int256 buffer = _abs(p.size) * int256(price) / UNIT * LIQUIDATION_BUFFER / UNIT;
        return remaining < buffer + int256(LIQUIDATION_FEE);
    }

    function liquidatePosition(address account) external {
        require(canLiquidate(account), "Position cannot be liquidated");
        _recomputeFunding();
        Position memory p = positions[account];
        _resize(p.size, 0);
        delete positions[account];
        uint256 fundingIndex = fundingSequence.length - 1;
        if (legacy) {
            emit PositionModified(p.id, account, 0, 0, 0, price, fundingIndex, 0);
            emit PositionLiquidated(p.id, account, msg.sender, p.size, price, LIQUIDATION_FEE);
        } else {
            emit PositionModified(p.id, account, 0, 0, 0, price, fundingIndex, 0, marketSkew);
            emit PositionLiquidated(p.id, account, msg.sender, p.size, price, LIQUIDATION_FEE / 2,
                LIQUIDATION_FEE / 2, 0);
        }
    }

    // -- internals ------------------------------------------------------------------------

    function _trade(address account, int256 sizeDelta, bool checkMargin) internal {
        Position storage p = positions[account];
        _recomputeFunding();
        _settlePnl(p);
        uint256 fee = uint256(_abs(sizeDelta) * int256(price) / UNIT * TAKER_FEE / UNIT);
        require(!checkMargin || p.margin >= fee, "Insufficient margin");
        p.margin = p.margin >= fee ? p.margin - uint128(fee) : 0;
        if (p.size == 0) {
            p.id = nextId++;
        }
        int256 newSize = int256(p.size) + sizeDelta;
        _resize(p.size, newSize);
        p.size = int128(newSize);
        p.lastFundingIndex = uint64(fundingSequence.length - 1);
        if (checkMargin) {
            _checkLeverage(p);
        }
        _emitModified(p, account, sizeDelta, fee);
    }

    function _pnl(Position storage p) internal view returns (int256) {
        return int256(p.size) * (int256(price) - int256(uint256(p.lastPrice))) / UNIT;
    }

    function _settlePnl(Position storage p) internal {
        if (p.size != 0) {
            int256 margin = int256(uint256(p.margin)) + _pnl(p);
            p.margin = margin > 0 ? uint128(uint256(margin)) : 0;
        }
        p.lastPrice = uint128(price);
    }

    function _checkLeverage(Position storage p) internal view {
        int256 notional = _abs(p.size) * int256(price) / UNIT;
        require(int256(uint256(p.margin)) * MAX_LEVERAGE >= notional, "Max leverage exceeded");
    }

    function _recomputeFunding() internal {
        int256 rate = int256(marketSkew) / 1e6;
        int256 funding = fundingSequence[fundingSequence.length - 1] + rate;
        fundingSequence.push(funding);
        emit FundingRecomputed(funding, rate, fundingSequence.length - 1, block.timestamp);
    }

    function _resize(int256 before, int256 after_) internal {
        marketSkew = int128(int256(marketSkew) - before + after_);
        marketSize = uint128(uint256(int256(uint256(marketSize)) - _abs(before) + _abs(after_)));
    }

    function _emitModified(Position storage p, address account, int256 tradeSize, uint256 fee) internal {
        uint256 fundingIndex = fundingSequence.length - 1;
        if (legacy) {
            emit PositionModified(p.id, account, p.margin, p.size, tradeSize, p.lastPrice, fundingIndex, fee);
        } else {
            emit PositionModified(p.id, account, p.margin, p.size, tradeSize, p.lastPrice, fundingIndex, fee,
                marketSkew);
        }
    }

    function _abs(int256 x) internal pure returns (int256) {
        return x >= 0 ? x : -x;
    }
}
