// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Bulk log emitter for scripts/bench.py (our own code). It replays recorded protocol logs
/// (exact topics and data, as the real contracts emit them) many times per transaction, writing
/// a counter into one 32-byte word of each copy (the position key) so that every copy is a
/// distinct position. `groups` logs are emitted per iteration, in order, all with the same key.
contract BenchEmitter {
    /// Emit each log once, as given (set-up logs such as market creations).
    function emitOnce(bytes32[3][] calldata topics, uint256[] calldata counts,
                      bytes[] calldata datas) external {
        for (uint256 g = 0; g < datas.length; g++) {
            bytes memory d = datas[g];
            bytes32 t0 = topics[g][0];
            bytes32 t1 = topics[g][1];
            bytes32 t2 = topics[g][2];
            uint256 c = counts[g];
            assembly {
                let p := add(d, 32)
                let len := mload(d)
                switch c
                case 0 { log0(p, len) }
                case 1 { log1(p, len, t0) }
                case 2 { log2(p, len, t0, t1) }
                default { log3(p, len, t0, t1, t2) }
            }
        }
    }

    /// topics: per log, its topics (1..3 used, unused ones ignored by `counts`);
    /// datas: per log, its data; keyOffsets: per log, byte offset of the key word in its data
    /// (type(uint256).max: the key is topics[1] instead). Key of iteration i is `start + i`.
    function emitMany(bytes32[3][] calldata topics, uint256[] calldata counts,
                      bytes[] calldata datas, uint256[] calldata keyOffsets,
                      uint256 start, uint256 n) external {
        uint256 groups = datas.length;
        bytes[] memory copies = new bytes[](groups);
        for (uint256 g = 0; g < groups; g++) {
            copies[g] = datas[g];
        }
        for (uint256 i = 0; i < n; i++) {
            bytes32 key = bytes32(start + i);
            for (uint256 g = 0; g < groups; g++) {
                bytes memory d = copies[g];
                uint256 off = keyOffsets[g];
                bytes32 t0 = topics[g][0];
                bytes32 t1 = topics[g][1];
                bytes32 t2 = topics[g][2];
                if (off == type(uint256).max) {
                    t1 = key;
                } else {
                    assembly { mstore(add(add(d, 32), off), key) }
                }
                uint256 c = counts[g];
                assembly {
                    let p := add(d, 32)
                    let len := mload(d)
                    switch c
                    case 1 { log1(p, len, t0) }
                    case 2 { log2(p, len, t0, t1) }
                    default { log3(p, len, t0, t1, t2) }
                }
            }
        }
    }
}
