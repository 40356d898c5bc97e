"""HTTP plumbing shared by webhook and backend: the access line (``access_log``), body
limits (``limits``), ``/healthz`` and ``/readyz`` (``health``), ``/metrics`` (``metrics``),
the container probe (``probe``), Content-Type parsing (``media_type``), outgoing aiohttp
sessions (``outbound``), the order in which a request tries a dependency's addresses
(``failover``) and the drain before a graceful shutdown (``draining``)."""
