"""`make bench`: the project's fan-out against a `websockets` ceiling and the tutorial floor."""
