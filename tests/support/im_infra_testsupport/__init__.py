"""What im-infra's own tests share: the devstack program and its probes, servers
started per test (fixtures), fault proxies, TLS servers, a PostgreSQL cluster, a
fresh-machine copy of the repository. On pytest's and mypy's path (the root
pyproject); not published."""
