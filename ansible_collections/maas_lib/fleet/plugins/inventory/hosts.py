# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: hosts
short_description: Hosts registered in a maas-lib database
version_added: 0.1.0
description:
  - Reads the hosts registered in a maas-lib database (C(maasctl hosts import)) and adds
    them grouped by pool and rack, with their BMC settings as C(bmc_*) variables.
  - Each host joins the group O(pool_prefix) + pool (default C(pool_<pool>)) and, if it has
    a rack, O(rack_prefix) + rack (default C(rack_<rack>)). Characters not allowed in group
    names become C(_), so rack C(sim-ipmi-r01) is group C(rack_sim_ipmi_r01).
  - "Variables set: C(pool), C(rack), C(bmc_address), C(bmc_port), C(bmc_protocol),
    C(bmc_system), C(bmc_credential) (a credential I(name), never a secret), C(bmc_tls_ca),
    C(bmc_tls_verify), C(bmc_fallback_protocol), C(bmc_fallback_address),
    C(bmc_fallback_port), C(hw_model), C(bmc_vendor), C(maas_status) (V(active),
    V(quarantined) or V(decommissioned)) and C(maas_status_reason); unset ones are left out."
  - A pool's standing disruption budget is set on its group as C(pool_max_unavailable), so
    importing this inventory back into maas-lib keeps it.
  - The file must end in C(maas.yml), C(maas.yaml), C(maas_lib.yml) or C(maas_lib.yaml).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [maas_lib.fleet.hosts]
    type: str
  db:
    description:
      - The maas-lib database, a path or V(sqlite:///PATH).
      - Defaults to E(MAAS_DB), then C(~/.local/share/maas-lib/maas.db).
      - A database that does not exist is an error.
    type: str
    env:
      - name: MAAS_DB
  api_url:
    description:
      - Read the hosts through the maas-lib service (C(maasctl serve)) at this V(https://)
        URL instead of a database (several comma-separated URLs are tried in turn); the
        token needs the C(viewer) role.
      - Used unless O(db) is set in the file. Naming both in the file is an error.
      - Through the service, pools' standing budgets (C(pool_max_unavailable)) are not
        set on their groups; the API does not serve them.
    type: str
    env:
      - name: MAAS_API_URL
  api_token:
    description:
      - The service's API token or an OIDC JWT. Prefer the environment variable (or a
        vaulted value) to a literal in the file; it is never shown or logged.
    type: str
    env:
      - name: MAAS_API_TOKEN
  api_ca:
    description: CA bundle that verifies the service's certificate (the system's CAs if unset).
    type: path
    env:
      - name: MAAS_API_CA
  api_client_cert:
    description:
      - A client certificate (PEM) for a service that requires one; its key too unless
        O(api_client_key).
    type: path
    env:
      - name: MAAS_API_CLIENT_CERT
  api_client_key:
    description: The client certificate's key (PEM).
    type: path
    env:
      - name: MAAS_API_CLIENT_KEY
  pools:
    description: Only hosts in these pools (default all).
    type: list
    elements: str
    default: []
  status:
    description: Only hosts with these standings.
    type: list
    elements: str
    choices: [active, quarantined, decommissioned]
    default: [active, quarantined]
  pool_prefix:
    description: Prefix of the pool groups; V('') names each group after its pool alone.
    type: str
    default: pool_
  rack_prefix:
    description: Prefix of the rack groups; V('') names each group after its rack alone.
    type: str
    default: rack_
  include_vars:
    description:
      - Also set the other inventory variables stored with each host when it was imported
        (maas-lib never stores secret-looking ones), as data (never templated).
      - Their C(ansible_*) variables (connection, interpreter, become...) only when named in
        O(allow_ansible_vars).
    type: bool
    default: false
  allow_ansible_vars:
    description:
      - C(ansible_*) variables stored with the hosts that O(include_vars) may set, e.g.
        C(ansible_host). By default none, so whoever can write the database cannot choose
        a connection or an interpreter for the plays that use this inventory.
    type: list
    elements: str
    default: []
requirements:
  - The C(maas-lib) Python package, importable by the Python that runs Ansible.
"""

EXAMPLES = r"""
# fleet.maas.yml -- `ansible-inventory -i fleet.maas.yml --graph`
plugin: maas_lib.fleet.hosts
db: /var/lib/maas-lib/maas.db

# Only the web and db pools, a group per BMC protocol, and the BMC address as ansible_host
# of a jump-host play:
# plugin: maas_lib.fleet.hosts
# pools: [web, db]
# keyed_groups:
#   - key: bmc_protocol
#     prefix: bmc
# compose:
#   bmc_host: bmc_address
# groups:
#   redfish_with_fallback: bmc_fallback_address is defined
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.unsafe_proxy import wrap_var

#: HostRecord fields set as host variables, under the same names.
HOST_VARS = (
    "pool",
    "rack",
    "bmc_address",
    "bmc_port",
    "bmc_protocol",
    "bmc_system",
    "bmc_credential",
    "bmc_tls_ca",
    "bmc_tls_verify",
    "bmc_fallback_protocol",
    "bmc_fallback_address",
    "bmc_fallback_port",
    "hw_model",
    "bmc_vendor",
)
SUFFIXES = ("maas.yml", "maas.yaml", "maas_lib.yml", "maas_lib.yaml")


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "maas_lib.fleet.hosts"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):  # type: ignore[override]
        super().parse(inventory, loader, path, cache)
        config = self._read_config_data(path) or {}
        try:
            import maas_lib
            from maas_lib.errors import MaasError
        except ImportError as exc:
            raise AnsibleParserError(
                f"maas_lib.fleet.hosts needs the maas-lib Python package ({exc}); "
                "install it where Ansible runs: pip install maas-lib"
            ) from None

        if "db" in config and "api_url" in config:
            raise AnsibleParserError("maas_lib.fleet.hosts: db and api_url: name one")
        if self.get_option("api_url") and "db" not in config:
            records, budgets = self._from_service(MaasError)
        else:
            records, budgets = self._from_database(maas_lib, MaasError)

        pools = set(self.get_option("pools") or ())
        wanted = set(self.get_option("status"))
        for record in records:
            if (pools and record.pool not in pools) or str(record.status) not in wanted:
                continue
            self._add(record, budgets)

    def _from_database(self, maas_lib, maas_error):
        db = self.get_option("db") or maas_lib.default_db_url()
        path_part = db[len("sqlite:///") :] if db.startswith("sqlite:///") else db
        if "://" not in path_part and not os.path.exists(path_part):
            raise AnsibleParserError(f"maas-lib database {path_part} does not exist")
        try:
            with maas_lib.open_fleet(db, create=False) as fleet:
                return fleet.hosts(), {p.name: p.max_unavailable for p in fleet.pools()}
        except maas_error as exc:
            raise AnsibleParserError(f"maas-lib database {db}: {exc}") from None

    def _from_service(self, maas_error):
        """The hosts and pool budgets through the service (`ApiFleet`, the client
        `maasctl --api` uses); its errors never hold the token."""
        from maas_lib.service.client import open_api

        url = self.get_option("api_url")
        try:
            with open_api(
                url,
                token=self.get_option("api_token"),
                ca=self.get_option("api_ca"),
                cert=self.get_option("api_client_cert"),
                key=self.get_option("api_client_key"),
            ) as fleet:
                return fleet.hosts(), {}  # the API serves no pool budgets
        except maas_error as exc:
            raise AnsibleParserError(f"maas-lib service {url}: {exc}") from None

    def _group(self, prefix: str, name: str) -> str:
        """Add (once) and return the group `prefix + name`, made a valid group name."""
        from ansible.inventory.group import to_safe_group_name

        return self.inventory.add_group(to_safe_group_name(prefix + name, force=True, silent=True))

    def _add(self, record, budgets) -> None:
        host = self.inventory.add_host(record.name)
        data = record.model_dump(mode="json")
        hostvars = {k: data[k] for k in HOST_VARS if data.get(k) is not None}
        hostvars["maas_status"] = data["status"]
        if data.get("status_reason"):
            hostvars["maas_status_reason"] = data["status_reason"]
        if self.get_option("include_vars"):
            from maas_lib.scheduler.ansible_data import store_host_vars

            stored = store_host_vars(data.get("vars") or {}, self.get_option("allow_ansible_vars"))
            hostvars = {**stored, **hostvars}
        for key, value in hostvars.items():
            # Data from a database, never templates: marked unsafe so Ansible won't render it.
            self.inventory.set_variable(host, key, wrap_var(value))

        pool_group = self._group(self.get_option("pool_prefix"), record.pool)
        self.inventory.add_child(pool_group, host)
        budget = budgets.get(record.pool)
        if budget is not None:
            self.inventory.set_variable(pool_group, "pool_max_unavailable", wrap_var(str(budget)))
        if record.rack:
            self.inventory.add_child(self._group(self.get_option("rack_prefix"), record.rack), host)

        strict = self.get_option("strict")
        # Composed variables first, so groups and keyed groups can use them.
        self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
        self._add_host_to_keyed_groups(
            self.get_option("keyed_groups"), hostvars, host, strict=strict
        )
