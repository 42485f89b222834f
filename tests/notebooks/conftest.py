def pytest_configure(config):
    config.addinivalue_line("markers", "notebooks: executes a teaching notebook top to bottom (about a minute each)")
