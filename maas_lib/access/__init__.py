"""Who may do what through the service: principals, API tokens, JWT (OIDC) verification,
the authorization policy and `GuardedFleet` (policy and audit in front of `Fleet`).

Between the front ends (the HTTP server in `maas_lib.service`) and the fleet: a front
end authenticates a caller into a `Principal`, then calls `GuardedFleet`; every rule lives
here, none in the server. Nothing is imported here, so `maas_lib.access.models` (which the
store uses) loads without the rest.
"""
