"""Flag catalogues shipped with orch."""
