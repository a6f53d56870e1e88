"""HTTP routes, compatible with the LangGraph Agent Server API that langgraph-sdk speaks.

Template-owned: `copier update` keeps this package current; edit your graph instead.
"""
