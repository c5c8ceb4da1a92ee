"""Inventories parsed by ansible-core itself: YAML, INI, directories, templated vars."""

import logging

import pytest

from maas_lib.errors import InputError
from maas_lib.inventory import load_inventory


def by_name(hosts):
    return {h.name: h for h in hosts}


def test_yaml_inventory_with_ranges_templates_and_group_vars(inventory):
    hosts, pools = load_inventory([str(inventory)])
    h = by_name(hosts)
    assert len(hosts) == 11
    assert h["web05"].bmc_address == "10.20.1.5"
    assert h["web05"].pool == "web" and h["web05"].rack == "r1"
    assert h["web05"].bmc_credential == "lab"
    assert h["gpu01"].bmc_protocol == "redfish" and h["gpu01"].bmc_credential == "redfish-lab"
    assert {p.name: str(p.max_unavailable) for p in pools} == {
        "db": "None",
        "gpu": "None",
        "web": "25%",
    }


def test_ini_inventory(write_file):
    path = write_file(
        "hosts.ini",
        """
        [compute]
        c1 bmc_address=10.0.0.1 bmc_port=6230 rack=r9
        c2 bmc_address=10.0.0.2 pool=special

        [compute:vars]
        bmc_credential=ipmi-lab
        """,
    )
    hosts, _ = load_inventory([str(path)])
    h = by_name(hosts)
    assert h["c1"].bmc_port == 6230 and h["c1"].rack == "r9" and h["c1"].pool == "compute"
    assert h["c2"].pool == "special"
    assert h["c1"].bmc_credential == "ipmi-lab"


def test_directory_inventory_with_group_vars_and_host_vars(write_file, tmp_path):
    write_file("invdir/hosts.yml", "all:\n  children:\n    edge:\n      hosts:\n        e1:\n")
    write_file("invdir/group_vars/edge.yml", "bmc_address: 192.0.2.10\nrack: re\n")
    write_file("invdir/host_vars/e1.yml", "bmc_port: 16230\n")
    hosts, _ = load_inventory([str(tmp_path / "invdir")])
    assert hosts[0].bmc_address == "192.0.2.10"
    assert hosts[0].bmc_port == 16230 and hosts[0].rack == "re"


def test_pool_defaults_to_most_specific_group(write_file):
    path = write_file(
        "nested.yml",
        """
        all:
          children:
            dc1:
              children:
                storage:
                  hosts:
                    s1: {bmc_address: 10.1.1.1}
        """,
    )
    hosts, _ = load_inventory([str(path)])
    assert hosts[0].pool == "storage"


def test_ungrouped_host_gets_pool_ungrouped(write_file):
    path = write_file("u.yml", "all:\n  hosts:\n    lone: {bmc_address: 10.1.1.2}\n")
    assert load_inventory([str(path)])[0][0].pool == "ungrouped"


@pytest.mark.parametrize(
    ("hostvars", "words"),
    [
        ("bmc_port: 70000", "host bad1: bmc_port: Input should be less than or equal to 65535"),
        ("bmc_port: abc", "host bad1: bmc_port:"),
        ("bmc_protocol: snmp", "host bad1: bmc_protocol:"),
        ("bmc_address: 'not valid!'", "host bad1: bmc_address:"),
        ("bmc_credential: 'a b'", "host bad1: bmc_credential:"),
        ("bmc_address: https://x.example\n          bmc_protocol: ipmi", "host bad1: bmc_address:"),
        ("bmc_system: /redfish/v1/Chassis/1", "host bad1: bmc_system: must be a Redfish Systems"),
        ("bmc_system: /redfish/v1/Systems/", "host bad1: bmc_system: must be a Redfish Systems"),
        ("bmc_system: /redfish/v1/Systems/1/Bios", "host bad1: bmc_system:"),
        ("bmc_system: 'https://x/redfish/v1/Systems/1'", "host bad1: bmc_system:"),
    ],
)
def test_invalid_host_var_names_host_and_var(write_file, hostvars, words):
    base = "bmc_address: 10.0.0.1\n          " if "bmc_address" not in hostvars else ""
    path = write_file(
        "bad.yml",
        "all:\n  hosts:\n    ok1: {bmc_address: 10.0.0.2}\n"
        f"    bad1:\n          {base}{hostvars}\n",
    )
    with pytest.raises(InputError) as exc:
        load_inventory([str(path)])
    assert str(exc.value).startswith(words)


def test_bmc_system_is_stored_as_a_systems_member_path(write_file):
    path = write_file(
        "sys.yml",
        "all:\n  hosts:\n"
        "    bare: {bmc_address: 'https://10.0.0.1', bmc_system: '1'}\n"
        "    full: {bmc_address: 'https://10.0.0.2', bmc_system: /redfish/v1/Systems/Node0/}\n"
        "    none: {bmc_address: 'https://10.0.0.3'}\n",
    )
    hosts = by_name(load_inventory([str(path)])[0])
    assert hosts["bare"].bmc_system == "/redfish/v1/Systems/1"
    assert hosts["full"].bmc_system == "/redfish/v1/Systems/Node0"
    assert hosts["none"].bmc_system is None


def test_missing_bmc_address_is_named(write_file):
    path = write_file("m.yml", "all:\n  hosts:\n    nobmc: {rack: r1}\n")
    with pytest.raises(InputError, match="host nobmc: bmc_address: Field required"):
        load_inventory([str(path)])


def test_undefined_template_variable_is_named(write_file):
    path = write_file("t.yml", "all:\n  hosts:\n    t1: {bmc_address: '{{ nope }}.lab'}\n")
    with pytest.raises(InputError, match="host t1: bmc_address:"):
        load_inventory([str(path)])


def test_malformed_yaml_says_why(write_file):
    path = write_file("broken.yml", "all:\n  hosts:\n    a: {bmc_address: 1.2.3.4\n")
    with pytest.raises(InputError, match=r"inventory .*broken.yml: YAML parsing failed"):
        load_inventory([str(path)])


def test_malformed_ini_says_why(write_file):
    path = write_file("broken.ini", "[web\nfoo bar=\n")
    with pytest.raises(InputError, match=r"inventory .*broken.ini: Failed to parse"):
        load_inventory([str(path)])


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        load_inventory([str(tmp_path / "nope.yml")])


def test_inventory_without_hosts_is_an_error(write_file):
    path = write_file("empty.yml", "all:\n  hostz:\n    a: 1\n")
    with pytest.raises(InputError, match="defines no hosts"):
        load_inventory([str(path)])


def test_conflicting_pool_budgets_are_refused(write_file):
    path = write_file(
        "c.yml",
        """
        all:
          children:
            web:
              hosts:
                w1: {bmc_address: 10.0.0.1, pool_max_unavailable: 2}
                w2: {bmc_address: 10.0.0.2, pool_max_unavailable: 3}
        """,
    )
    with pytest.raises(InputError, match="pool web: pool_max_unavailable is 2 for host w1"):
        load_inventory([str(path)])


def test_invalid_pool_budget(write_file):
    path = write_file(
        "c.yml",
        "all:\n  vars: {pool_max_unavailable: 0}\n  hosts:\n    w1: {bmc_address: 10.0.0.1}\n",
    )
    with pytest.raises(InputError, match=r"pool ungrouped: pool_max_unavailable: .*at least 1"):
        load_inventory([str(path)])


def test_secret_looking_vars_are_ignored_with_a_warning(write_file, caplog):
    path = write_file(
        "s.yml",
        "all:\n  hosts:\n    s1: {bmc_address: 10.0.0.1, bmc_password: hunter2-secret}\n",
    )
    with caplog.at_level(logging.WARNING):
        hosts, _ = load_inventory([str(path)])
    assert "bmc_password ignored" in caplog.text
    assert "hunter2-secret" not in caplog.text
    assert "hunter2-secret" not in hosts[0].model_dump_json()


def test_inventory_plugin_config_goes_through_ansible_plugins(write_file):
    path = write_file(
        "gen.yml",
        """
        plugin: ansible.builtin.generator
        hosts:
          name: "{{ role }}-{{ n }}"
          parents:
            - name: "{{ role }}"
              vars:
                bmc_address: "{{ '10.5.0.1' }}"
        layers:
          role: [api, cache]
          n: ["1", "2"]
        """,
    )
    hosts, _ = load_inventory([str(path)])
    assert sorted((h.name, h.pool) for h in hosts) == [
        ("api-1", "api"),
        ("api-2", "api"),
        ("cache-1", "cache"),
        ("cache-2", "cache"),
    ]
    # Loading twice in one process must work the same.
    assert len(load_inventory([str(path)])[0]) == 4


def test_unknown_inventory_plugin_is_named(write_file):
    path = write_file("np.yml", "plugin: nosuch.plugin.x\n")
    with pytest.raises(InputError, match=r"specifies unknown plugin 'nosuch\.plugin\.x'"):
        load_inventory([str(path)])


def test_other_vars_are_kept_for_hooks_templated_without_secrets(write_file, tmp_path):
    path = write_file(
        "inv.yml",
        "all:\n"
        "  vars: {site: ams1, ansible_password: hunter2-secret}\n"
        "  children:\n"
        "    web:\n"
        "      vars: {drain_url: 'https://lb.{{ site }}.example/drain', api_token: tok-secret}\n"
        "      hosts:\n"
        "        w1: {bmc_address: 10.0.0.1, ansible_host: 192.0.2.7, tags: [a, b]}\n",
    )
    hosts, _ = load_inventory([path])
    assert hosts[0].vars == {
        "site": "ams1",
        "drain_url": "https://lb.ams1.example/drain",
        "ansible_host": "192.0.2.7",
        "tags": ["a", "b"],
    }
    # Kept in the database as written, and no secret-looking var ever is.
    import maas_lib

    db = tmp_path / "f.db"
    with maas_lib.open_fleet(db) as fleet:
        fleet.import_hosts([path])
        assert fleet.store.get_host("w1").vars == hosts[0].vars
    data = b"".join(p.read_bytes() for p in tmp_path.glob("f.db*"))
    assert b"hunter2-secret" not in data and b"tok-secret" not in data


def test_vaulted_vars_are_never_kept_and_need_no_vault_password(write_file, tmp_path):
    from ansible.parsing.vault import VaultLib, VaultSecret

    secret = VaultSecret(b"example-vault-password")
    cipher = VaultLib([("default", secret)]).encrypt("s3cret-user").decode()
    body = "\n".join("          " + line for line in cipher.splitlines())
    path = write_file(
        "inv.yml",
        "all:\n"
        "  hosts:\n"
        "    v1:\n"
        "      bmc_address: 10.0.0.1\n"
        "      site: ams1\n"
        "      vault_bmc_username: !vault |\n" + body + "\n",
    )
    hosts, _ = load_inventory([path])
    assert hosts[0].vars == {"site": "ams1"}
