"""`smki serve`: the SMKI's online interfaces on one aiohttp service (a front end, like smki.cli).

- settings: the service's configuration file (kind: service).
- server: worker processes, TLS (1.2+), mutual TLS, graceful stop.
- app: the aiohttp application: middlewares (the caller from its client certificate, the access log,
  metrics, errors as answers and never tracebacks), /health, /metrics.
- repository: the SMKI Repository web service (the Librarian's answers).
- messages: the CSR web services' XML (SEC Appendix M, Appendices B and E), checked against the
  schemas in smki/data/schemas.
- tls, transport, metrics, access_log: the server's TLS context, the guarded connections (caps, deadlines,
  framing), the Prometheus counters shared by the workers, the access log written on a beat.
- adhoc, organisation, batches: the Ad Hoc and Batched Device CSR web services and Organisation CSR
  submission (the Issuing Authorities' answers); answers: their one refusal table, the caller's role and the
  request audit entry; coalesce: ad hoc requests that arrive together, issued as one group.
- portal: the SMKI Portal's web pages under /portal/ (Jinja2 templates, autoescaped; assets served by smki):
  Organisation and ad hoc Device CSRs, batch ZIPs with live status, repository search and certificate pages,
  CRLs and ARLs, the operator view; a client certificate or a password session (smki.register.accounts).

A handler parses its input, calls one actor method and renders the result; it holds no check of its own.
"""
