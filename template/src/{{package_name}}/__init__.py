"""The service package: app.py builds the app, graph.py holds your graph."""
