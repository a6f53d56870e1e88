"""Example graphs the service can serve beside yours (registered in langgraph.json); copy from them."""
