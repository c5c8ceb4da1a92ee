"""The one resume rule every executor applies: the nth time a task reaches a step of a
name, it is skipped if earlier attempts completed at least n steps of that name."""

from maas_lib.scheduler.resume import Resume


def test_a_decommission_resumed_after_its_first_power_off_runs_the_second():
    resume = Resume({"power-off": ["succeeded"], "power-on": ["succeeded"]})
    assert resume.reach("power-off") == "succeeded"  # skipped
    assert resume.reach("power-on") == "succeeded"
    assert resume.reach("power-off") is None  # the final power-off runs


def test_a_step_that_did_not_apply_takes_no_occurrence():
    # A reboot's hard power-off reached by the Ansible executor (runner_on_start) and
    # then skipped by its condition: the next power-off is still the first.
    resume = Resume({"power-off": ["succeeded"]})
    assert resume.reach("power-off") == "succeeded"
    resume.retract("power-off")
    assert resume.reach("power-off") == "succeeded"
    assert resume.reach("power-off") is None


def test_outcomes_are_kept_in_order_and_out_of_range_is_run():
    resume = Resume({"soft-off": ["timeout"]})
    assert resume.earlier("soft-off", 1) == "timeout"
    assert resume.earlier("soft-off", 2) is None
    assert resume.earlier("soft-off", 0) is None
    assert Resume(None).reach("power-on") is None
    resume.retract("never-reached")
    assert resume.reach("soft-off") == "timeout"
