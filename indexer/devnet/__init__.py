"""A local dev chain for the demo and the tests: anvil, solc-js and the trading simulator."""
