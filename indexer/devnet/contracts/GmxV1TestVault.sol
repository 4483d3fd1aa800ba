// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title GMX-v1-style test vault for perp-indexer (our own code, not GMX's).
/// @notice Emits exactly the GMX v1 Vault position events (same declarations, same order within a
/// transaction, USD x 1e30) and keeps positions on chain with getters shaped like the real Vault's:
/// getPosition(account, collateralToken, indexToken, isLong) and globalShortSizes(token).
/// Collateral is credited in USD directly (no ERC-20 transfers): the indexer only reads events.
contract GmxV1TestVault {
    struct Position {
        uint256 size;
        uint256 collateral;
        uint256 averagePrice;
        uint256 entryFundingRate;
        uint256 reserveAmount;
        int256 realisedPnl;
        uint256 lastIncreasedTime;
    }

    uint256 public constant PRICE_PRECISION = 1e30;
    uint256 public constant BASIS_POINTS_DIVISOR = 10000;
    uint256 public constant FUNDING_RATE_PRECISION = 1e6;
    // The real Vault's settings, under its getters' names; like its setters, setFees emits nothing.
    uint256 public marginFeeBasisPoints = 10;             // 0.1 %
    uint256 public liquidationFeeUsd = 5e30;              // $5
    uint256 public maxLeverage = 50 * BASIS_POINTS_DIVISOR; // 50x
    uint256 public constant FUNDING_INTERVAL = 3600;
    uint256 public constant FUNDING_RATE_STEP = 100;      // per interval, 1e6 precision

    address public gov;
    mapping(address => bool) public isLiquidator;
    mapping(address => uint256) public prices;            // USD x 1e30 per whole token
    mapping(bytes32 => Position) public positions;
    mapping(address => uint256) public globalShortSizes;
    mapping(address => uint256) public cumulativeFundingRates;
    mapping(address => uint256) public lastFundingTimes;

    event IncreasePosition(bytes32 key, address account, address collateralToken, address indexToken,
        uint256 collateralDelta, uint256 sizeDelta, bool isLong, uint256 price, uint256 fee);
    event DecreasePosition(bytes32 key, address account, address collateralToken, address indexToken,
        uint256 collateralDelta, uint256 sizeDelta, bool isLong, uint256 price, uint256 fee);
    event LiquidatePosition(bytes32 key, address account, address collateralToken, address indexToken,
        bool isLong, uint256 size, uint256 collateral, uint256 reserveAmount, int256 realisedPnl,
        uint256 markPrice);
    event UpdatePosition(bytes32 key, uint256 size, uint256 collateral, uint256 averagePrice,
        uint256 entryFundingRate, uint256 reserveAmount, int256 realisedPnl, uint256 markPrice);
    event ClosePosition(bytes32 key, uint256 size, uint256 collateral, uint256 averagePrice,
        uint256 entryFundingRate, uint256 reserveAmount, int256 realisedPnl);
    event UpdateFundingRate(address token, uint256 fundingRate);
    event CollectMarginFees(address token, uint256 feeUsd, uint256 feeTokens);

    constructor() {
        gov = msg.sender;
    }

    function setLiquidator(address account, bool active) external {
        require(msg.sender == gov, "Vault: forbidden");
        isLiquidator[account] = active;
    }

    function setFees(uint256 marginFeeBps, uint256 liquidationFee, uint256 maxLeverageBps) external {
        require(msg.sender == gov, "Vault: forbidden");
        marginFeeBasisPoints = marginFeeBps;
        liquidationFeeUsd = liquidationFee;
        maxLeverage = maxLeverageBps;
    }

    function setPrice(address token, uint256 price) external {
        require(msg.sender == gov, "Vault: forbidden");
        require(price > 0, "Vault: invalid price");
        prices[token] = price;
    }

    function getPositionKey(address account, address collateralToken, address indexToken, bool isLong)
        public pure returns (bytes32)
    {
        return keccak256(abi.encodePacked(account, collateralToken, indexToken, isLong));
    }

    function getPosition(address account, address collateralToken, address indexToken, bool isLong)
        external view
        returns (uint256, uint256, uint256, uint256, uint256, uint256, bool, uint256)
    {
        Position memory p = positions[getPositionKey(account, collateralToken, indexToken, isLong)];
        uint256 pnl = p.realisedPnl >= 0 ? uint256(p.realisedPnl) : uint256(-p.realisedPnl);
        return (p.size, p.collateral, p.averagePrice, p.entryFundingRate, p.reserveAmount, pnl,
            p.realisedPnl >= 0, p.lastIncreasedTime);
    }

    function getDelta(address indexToken, uint256 size, uint256 averagePrice, bool isLong)
        public view returns (bool, uint256)
    {
        uint256 price = prices[indexToken];
        uint256 priceDelta = averagePrice > price ? averagePrice - price : price - averagePrice;
        uint256 delta = size * priceDelta / averagePrice;
        bool hasProfit = isLong ? price > averagePrice : averagePrice > price;
        return (hasProfit, delta);
    }

    /// @return state 0: healthy, 1: liquidate (losses and fees eat the collateral),
    /// 2: max leverage exceeded with collateral left (the vault closes the position itself).
    function validateLiquidation(address account, address collateralToken, address indexToken, bool isLong)
        public view returns (uint256 state)
    {
        Position memory p = positions[getPositionKey(account, collateralToken, indexToken, isLong)];
        if (p.size == 0) return 0;
        (bool hasProfit, uint256 delta) = getDelta(indexToken, p.size, p.averagePrice, isLong);
        // funding accrued to the stored cumulative rate, plus the fee of closing the whole size
        uint256 fees = p.size * (cumulativeFundingRates[collateralToken] - p.entryFundingRate)
            / FUNDING_RATE_PRECISION;
        fees += p.size - p.size * (BASIS_POINTS_DIVISOR - marginFeeBasisPoints) / BASIS_POINTS_DIVISOR;
        if (!hasProfit && p.collateral < delta) return 1;
        uint256 remaining = hasProfit ? p.collateral : p.collateral - delta;
        if (remaining < fees) return 1;
        if (remaining < fees + liquidationFeeUsd) return 1;
        if (remaining * maxLeverage < p.size * BASIS_POINTS_DIVISOR) return 2;
        return 0;
    }

    function _updateFunding(address token) internal {
        if (lastFundingTimes[token] == 0) {
            lastFundingTimes[token] = block.timestamp / FUNDING_INTERVAL * FUNDING_INTERVAL;
            return;
        }
        if (lastFundingTimes[token] + FUNDING_INTERVAL > block.timestamp) return;
        uint256 intervals = (block.timestamp - lastFundingTimes[token]) / FUNDING_INTERVAL;
        cumulativeFundingRates[token] += intervals * FUNDING_RATE_STEP;
        lastFundingTimes[token] = block.timestamp / FUNDING_INTERVAL * FUNDING_INTERVAL;
        emit UpdateFundingRate(token, cumulativeFundingRates[token]);
    }

    function _nextAveragePrice(address indexToken, Position memory p, bool isLong, uint256 price,
        uint256 sizeDelta) internal view returns (uint256)
    {
        (bool hasProfit, uint256 delta) = getDelta(indexToken, p.size, p.averagePrice, isLong);
        uint256 nextSize = p.size + sizeDelta;
        uint256 divisor;
        if (isLong) divisor = hasProfit ? nextSize + delta : nextSize - delta;
        else divisor = hasProfit ? nextSize - delta : nextSize + delta;
        return price * nextSize / divisor;
    }

    /// Same selector as the real Vault's increasePosition is not needed: collateral is given in USD.
    function increasePosition(address account, address collateralToken, address indexToken,
        uint256 collateralDeltaUsd, uint256 sizeDelta, bool isLong) external
    {
        require(msg.sender == account, "Vault: invalid msg.sender");
        _updateFunding(collateralToken);
        bytes32 key = getPositionKey(account, collateralToken, indexToken, isLong);
        Position storage p = positions[key];
        uint256 price = prices[indexToken];
        require(price > 0, "Vault: no price");
        if (p.size == 0) {
            p.averagePrice = price;
        } else if (sizeDelta > 0) {
            p.averagePrice = _nextAveragePrice(indexToken, p, isLong, price, sizeDelta);
        }
        uint256 fee = sizeDelta * marginFeeBasisPoints / BASIS_POINTS_DIVISOR;
        p.collateral += collateralDeltaUsd;
        require(p.collateral >= fee, "Vault: insufficient collateral for fees");
        p.collateral -= fee;
        p.entryFundingRate = cumulativeFundingRates[collateralToken];
        p.size += sizeDelta;
        p.lastIncreasedTime = block.timestamp;
        require(p.size > 0, "Vault: invalid position.size");
        require(p.size >= p.collateral, "Vault: _size must be more than _collateral");
        p.reserveAmount += sizeDelta * 1e18 / price;
        if (!isLong) globalShortSizes[indexToken] += sizeDelta;
        require(validateLiquidation(account, collateralToken, indexToken, isLong) == 0,
            "Vault: position would be liquidatable");
        emit CollectMarginFees(collateralToken, fee, fee * 1e18 / price);
        emit IncreasePosition(key, account, collateralToken, indexToken, collateralDeltaUsd, sizeDelta,
            isLong, price, fee);
        emit UpdatePosition(key, p.size, p.collateral, p.averagePrice, p.entryFundingRate,
            p.reserveAmount, p.realisedPnl, price);
    }

    /// Same signature and selector (0x82a08490) as the real Vault's decreasePosition.
    function decreasePosition(address account, address collateralToken, address indexToken,
        uint256 collateralDelta, uint256 sizeDelta, bool isLong, address receiver)
        external returns (uint256)
    {
        require(msg.sender == account, "Vault: invalid msg.sender");
        return _decreasePosition(account, collateralToken, indexToken, collateralDelta, sizeDelta,
            isLong, receiver);
    }

    function _decreasePosition(address account, address collateralToken, address indexToken,
        uint256 collateralDelta, uint256 sizeDelta, bool isLong, address) internal returns (uint256)
    {
        _updateFunding(collateralToken);
        bytes32 key = getPositionKey(account, collateralToken, indexToken, isLong);
        Position storage p = positions[key];
        require(p.size > 0, "Vault: empty position");
        require(p.size >= sizeDelta, "Vault: position size exceeded");
        require(p.collateral >= collateralDelta, "Vault: position collateral exceeded");
        uint256 price = prices[indexToken];
        uint256 reserveDelta = p.reserveAmount * sizeDelta / p.size;
        p.reserveAmount -= reserveDelta;
        (bool hasProfit, uint256 delta) = getDelta(indexToken, p.size, p.averagePrice, isLong);
        uint256 adjustedDelta = sizeDelta * delta / p.size;
        uint256 payout;
        if (adjustedDelta > 0) {
            if (hasProfit) {
                payout = adjustedDelta;
                p.realisedPnl += int256(adjustedDelta);
            } else {
                require(p.collateral >= adjustedDelta, "Vault: losses exceed collateral");
                p.collateral -= adjustedDelta;
                p.realisedPnl -= int256(adjustedDelta);
            }
        }
        if (collateralDelta > 0) {
            require(p.collateral >= collateralDelta, "Vault: collateral after losses exceeded");
            p.collateral -= collateralDelta;
            payout += collateralDelta;
        }
        if (p.size == sizeDelta) {
            payout += p.collateral;
            p.collateral = 0;
        }
        uint256 fee = sizeDelta * marginFeeBasisPoints / BASIS_POINTS_DIVISOR;
        if (payout >= fee) {
            payout -= fee;
        } else {
            require(p.collateral >= fee, "Vault: fees exceed collateral");
            p.collateral -= fee;
        }
        if (!isLong) globalShortSizes[indexToken] -= sizeDelta;
        emit CollectMarginFees(collateralToken, fee, fee * 1e18 / price);
        emit DecreasePosition(key, account, collateralToken, indexToken, collateralDelta, sizeDelta,
            isLong, price, fee);
        if (p.size != sizeDelta) {
            p.entryFundingRate = cumulativeFundingRates[collateralToken];
            p.size -= sizeDelta;
            require(p.size >= p.collateral, "Vault: _size must be more than _collateral");
            require(validateLiquidation(account, collateralToken, indexToken, isLong) == 0,
                "Vault: position would be liquidatable");
            emit UpdatePosition(key, p.size, p.collateral, p.averagePrice, p.entryFundingRate,
                p.reserveAmount, p.realisedPnl, price);
        } else {
            emit ClosePosition(key, p.size, p.collateral, p.averagePrice, p.entryFundingRate,
                p.reserveAmount, p.realisedPnl);
            delete positions[key];
        }
        return payout;
    }

    /// Same signature and selector (0xde2ea948) as the real Vault's liquidatePosition.
    function liquidatePosition(address account, address collateralToken, address indexToken, bool isLong,
        address feeReceiver) external
    {
        require(isLiquidator[msg.sender], "Vault: invalid liquidator");
        _updateFunding(collateralToken);
        bytes32 key = getPositionKey(account, collateralToken, indexToken, isLong);
        Position memory p = positions[key];
        require(p.size > 0, "Vault: empty position");
        uint256 state = validateLiquidation(account, collateralToken, indexToken, isLong);
        require(state != 0, "Vault: position cannot be liquidated");
        if (state == 2) {
            // max leverage exceeded but collateral remains: close it through the decrease path
            _decreasePosition(account, collateralToken, indexToken, 0, p.size, isLong, account);
            return;
        }
        uint256 markPrice = prices[indexToken];
        emit CollectMarginFees(collateralToken, p.size * marginFeeBasisPoints / BASIS_POINTS_DIVISOR, 0);
        emit LiquidatePosition(key, account, collateralToken, indexToken, isLong, p.size,
            p.collateral, p.reserveAmount, p.realisedPnl, markPrice);
        if (!isLong) globalShortSizes[indexToken] -= p.size;
        delete positions[key];
        feeReceiver;
    }
}
