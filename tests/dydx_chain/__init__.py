"""A simulated dYdX v4 chain for the tests: ``simulator`` trades on its own subaccount state and
writes the blocks as dydxprotocol/v4-chain and CometBFT 0.38 write them (with that state as the
truth the indexer is held to); ``node`` serves a recording over CometBFT JSON-RPC and the Cosmos
REST queries the indexer reads, with optional provider faults."""
