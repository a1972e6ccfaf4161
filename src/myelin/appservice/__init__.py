"""Application services (bridges): registration files, what a service is
interested in, the HTTP API Myelin calls on a service, and the job that
delivers transactions to them.

registration.py parses ``app_service_config_files``; api.py calls a service
(transactions, user/alias queries, third-party lookups, ping); sender.py is
the ``appservice`` job. The client-facing behaviour (as_token auth,
masquerading, exclusive namespaces, lookups) is ``handlers/appservices.py``.
"""
