"""HTTP routes, compatible with the LangGraph Agent Server API that langgraph-sdk speaks."""
