# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation shared by the maas_lib.fleet modules."""

from __future__ import annotations


class ModuleDocFragment:
    # Every module: the database, where it runs, the action group.
    DOCUMENTATION = r"""
options:
  db:
    description:
      - The maas-lib database, a path or V(sqlite:///PATH).
      - Defaults to the E(MAAS_DB) environment variable, then
        C(~/.local/share/maas-lib/maas.db) (E(XDG_DATA_HOME) honoured).
      - A database that does not exist is an error; the modules never create one.
    type: str
requirements:
  - "The C(maas-lib) Python package, importable by the Python that runs the module
    (usually the controller's, with C(delegate_to: localhost))."
notes:
  - maas-lib errors end the task with a one-line C(msg); bad input (an unknown host or
    request, an invalid option, a credential that does not resolve) changes nothing.
  - All modules of this collection are in the action group C(maas_lib.fleet.maas), so
    C(module_defaults) can set O(db) once for all of them.
"""

    # The request modules (submit, request_info, cancel): through the maas-lib service.
    API = r"""
options:
  api_url:
    description:
      - Go through the maas-lib service (C(maasctl serve)) at this V(https://) URL instead
        of a database, so the task needs no database access (an AWX job template).
        Several comma-separated URLs are active-active servers, tried in turn.
      - Defaults to the E(MAAS_API_URL) environment variable, unless O(db) is set.
      - Mutually exclusive with O(db).
    type: str
  api_token:
    description:
      - The service's API token (C(maasctl tokens create)) or an OIDC JWT; never logged
        or returned.
      - Defaults to the E(MAAS_API_TOKEN) environment variable (what the AWX credential
        type in the collection's C(docs/awx) sets).
    type: str
  api_ca:
    description:
      - CA bundle that verifies the service's certificate; verification is always on.
      - Defaults to the E(MAAS_API_CA) environment variable, then the system's CAs.
    type: path
  api_client_cert:
    description:
      - A client certificate (PEM) for a service that requires one (mutual TLS); its key
        too unless O(api_client_key).
      - Defaults to the E(MAAS_API_CLIENT_CERT) environment variable.
    type: path
  api_client_key:
    description:
      - The client certificate's key (PEM).
      - Defaults to the E(MAAS_API_CLIENT_KEY) environment variable.
    type: path
notes:
  - Through the service, the token's principal is recorded as the submitter or
    canceller, and only what its role and its teams' pools allow is done (else the task
    fails naming why); a submission is sent with an idempotency key and retried, and
    failed over between URLs, for up to 30 seconds, so it is accepted once.
"""

    # Direct BMC control of one host (power, boot_device, bmc_info).
    BMC = r"""
options:
  name:
    description:
      - The host. Its BMC address, protocol, port, TLS settings, fallback path and
        credential name come from the play's inventory when that host has a
        C(bmc_address) variable there (its C(bmc_*) variables, as C(maasctl hosts import)
        reads them; no database is needed), else from the maas-lib database (see O(db)).
      - With O(bmc_address), only a label for the results; neither is used.
      - A shell-style glob is accepted if it matches exactly one registered host.
      - One of O(name), O(names) and O(bmc_address) is required.
    type: str
  names:
    description:
      - 'The fleet-wide form. Many hosts in one task, for example
        C(names: "{{ ansible_play_hosts }}") with C(run_once: true). maas-lib reaches
        their BMCs side by side, with the concurrency and per-endpoint limits of
        C(maasctl bmc), and returns one result per host in RV(hosts).'
      - Each host's BMC details come from the inventory or the database as for O(name);
        globs match registered hosts.
      - The task fails if any host failed; RV(failed_hosts) names them.
      - Mutually exclusive with O(name) and O(bmc_address).
    type: list
    elements: str
  bmc_address:
    description:
      - Reach a BMC given by parameters instead of a registered host.
      - An IP address or DNS name (IPMI), or an V(https://) URL (Redfish).
    type: str
  bmc_protocol:
    description:
      - The BMC protocol for O(bmc_address); default V(redfish) for a URL, else V(ipmi).
    type: str
    choices: [ipmi, redfish]
  bmc_port:
    description: The BMC port for O(bmc_address) (IPMI default 623).
    type: int
  bmc_system:
    description:
      - Redfish system path for O(bmc_address), for example V(/redfish/v1/Systems/1).
      - Needed when the BMC manages more than one system.
    type: str
  bmc_tls_ca:
    description: CA bundle that verifies a Redfish O(bmc_address)'s certificate.
    type: path
  bmc_tls_verify:
    description:
      - Verify a Redfish O(bmc_address)'s TLS certificate (default V(true)).
      - V(false) turns verification off, with a warning.
    type: bool
  credential:
    description:
      - The name of a maas-lib credential, resolved like the CLI does from
        E(MAAS_CRED_<NAME>_USERNAME) and E(MAAS_CRED_<NAME>_PASSWORD), or from the TOML
        file named by E(MAAS_CREDENTIALS_FILE).
      - Defaults to the registered host's credential name (V(default) for O(bmc_address)).
      - Mutually exclusive with O(username) and O(password).
    type: str
  username:
    description: BMC user name, given directly (requires O(password)).
    type: str
  password:
    description:
      - BMC password, given directly (requires O(username)); never logged or returned.
      - Prefer a vaulted variable to a literal.
    type: str
  timeout:
    description:
      - Seconds for one BMC call; a BMC that does not answer in time is V(unreachable).
      - If unset, maas-lib's default, V(10) (the one C(maasctl bmc) uses).
    type: float
  power_timeout:
    description:
      - Seconds for a BMC to confirm a requested power state.
      - If unset, maas-lib's default, V(300).
    type: float
  retries:
    description:
      - Extra attempts for transient BMC errors (busy, HTTP 5xx), with backoff.
      - If unset, maas-lib's default, V(2).
    type: int
notes:
  - 'On the controller (a local connection, for example C(delegate_to: localhost)) the
    task runs in the Ansible worker process, without a module process; delegated to another
    machine, or with C(async), the module runs (and reads no inventory variables). With the P(maas_lib.fleet.hosts#inventory) inventory,
    use C(delegate_to: localhost) and C(name: "{{ inventory_hostname }}").'
  - Where a host's BMC details come from, first to last - O(bmc_address) and its
    options; the C(bmc_*) variables of that host in the play's inventory (the task run in
    the Ansible worker); the maas-lib database. RV(bmc_from) says which. Secrets are never
    read from the inventory; the credential is named by C(bmc_credential) or the task.
  - A failed BMC call fails the task with C(error_class) (V(unreachable), V(auth),
    V(timeout), V(power_unknown), V(unsupported), V(tls), V(bmc_error)), C(error) and
    C(via).
"""
