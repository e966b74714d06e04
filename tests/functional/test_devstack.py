"""The devstack plugin, run phase by phase the way stack.sh runs it.

devstack cannot run here, so its functions are stand-ins defined by a bash
harness: ``iniset`` and ``ini_has_option`` really edit and read the
config file (so the file the plugin leaves behind is checked by the real
``masakari-iim``), ``sudo`` runs its command, and every call is recorded
to a file the tests read. The harness sources ``devstack/settings`` once,
then ``devstack/plugin.sh`` with each phase's arguments in one shell, as
stack.sh does, with ``nounset`` on so a misspelt variable fails the test.
"""
import configparser
import os
import pathlib
import subprocess
import sys

from oslo_config import cfg

from masakarimonitors_iim import conf as iim_conf

ROOT = pathlib.Path(__file__).resolve().parents[2]

HARNESS = r"""
set -o errexit -o nounset -o pipefail

record() { local IFS=$'\t'; printf '%s\n' "$*" >> "$CALLS"; }

iniset() {
    record iniset "$@"
    "$PYTHON" - "$@" <<'EOF'
import configparser, sys
path, section, option, value = sys.argv[1:5]
ini = configparser.RawConfigParser()
ini.optionxform = str
ini.read(path)
if section != "DEFAULT" and not ini.has_section(section):
    ini.add_section(section)
ini.set(section, option, value)
with open(path, "w") as fh:
    ini.write(fh)
EOF
}
ini_has_option() {
    "$PYTHON" - "$@" <<'EOF'
import configparser, sys
path, section, option = sys.argv[1:4]
ini = configparser.RawConfigParser()
ini.read(path)
sys.exit(0 if ini.has_option(section, option) else 1)
EOF
}
is_service_enabled() {
    local s
    for s in "$@"; do
        [[ ",$ENABLED_SERVICES," == *",$s,"* ]] && return 0
    done
    return 1
}
setup_develop() { record setup_develop "$@"; }
run_process() { record run_process "$@"; }
stop_process() { record stop_process "$@"; }
sudo() { record sudo "$@"; "$@"; }
die() { shift; record die "$*"; echo "die: $*" >&2; exit 1; }
echo_summary() { record echo_summary "$*"; }
get_python_exec_prefix() { echo "$FAKE_BIN_DIR"; }
define_plugin() { record define_plugin "$@"; }
plugin_requires() { record plugin_requires "$@"; }
enable_service() {
    local s
    for s in "$@"; do
        [[ ",$DISABLED_SERVICES," == *",$s,"* ]] && continue
        is_service_enabled "$s" || ENABLED_SERVICES+=",$s"
    done
}

source "$PLUGIN_DIR/settings"
for phase in "$@"; do
    source "$PLUGIN_DIR/plugin.sh" $phase
done
"""

COMPUTE = "key,n-api,n-cpu,masakari,masakari-api,masakari-engine"


def run_phases(tmp_path, phases, enabled=COMPUTE, disabled="", **env_over):
    """Run the plugin through ``phases``; return (process, recorded calls)."""
    calls = tmp_path / "calls.tsv"
    env = {
        "PATH": os.environ["PATH"], "PYTHON": sys.executable, "CALLS": str(calls),
        "PLUGIN_DIR": str(ROOT / "devstack"), "FAKE_BIN_DIR": "/opt/stack/data/venv/bin",
        "ENABLED_SERVICES": enabled, "DISABLED_SERVICES": disabled,
        "DEST": "/opt/stack", "DATA_DIR": str(tmp_path / "data"),
        "STACK_USER": subprocess.check_output(["id", "-un"], text=True).strip(),
        "SERVICE_PASSWORD": "s3cret-pw", "SERVICE_PROJECT_NAME": "service",
        "KEYSTONE_SERVICE_URI": "http://10.0.0.5/identity", "REGION_NAME": "RegionOne",
        "MASAKARI_IIM_CONF": str(tmp_path / "etc" / "masakarimonitors.conf"),
    }
    env.update(env_over)
    proc = subprocess.run(["bash", "-c", HARNESS, "harness", *phases], env=env,
                          capture_output=True, text=True, timeout=60)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, [tuple(line.split("\t")) for line in lines]


def of(calls, name):
    return [c[1:] for c in calls if c[0] == name]


def read_conf(tmp_path):
    ini = configparser.RawConfigParser()
    ini.read(tmp_path / "etc" / "masakarimonitors.conf")
    return ini


STACK = ["stack pre-install", "stack install", "stack post-config", "stack extra"]


def test_full_stack_configures_and_starts_the_service(tmp_path):
    proc, calls = run_phases(tmp_path, STACK + ["unstack"])
    assert proc.returncode == 0, proc.stderr
    conf = str(tmp_path / "etc" / "masakarimonitors.conf")
    journal = str(tmp_path / "data" / "masakari-iim" / "iim-journal.sqlite")
    hostname = subprocess.check_output(["hostname"], text=True).strip()

    assert of(calls, "setup_develop") == [("/opt/stack/masakarimonitors-iim",)]
    assert set(of(calls, "iniset")) == {
        (conf, "DEFAULT", "hostname", hostname),
        (conf, "libvirt", "connection_uri", "qemu:///system"),
        (conf, "introspectiveinstancemonitor", "journal_path", journal),
        (conf, "introspectiveinstancemonitor", "notifier", "masakari"),
        (conf, "api", "auth_type", "password"),
        (conf, "api", "auth_url", "http://10.0.0.5/identity"),
        (conf, "api", "username", "masakari"),
        (conf, "api", "password", "s3cret-pw"),
        (conf, "api", "project_name", "service"),
        (conf, "api", "user_domain_id", "default"),
        (conf, "api", "project_domain_id", "default"),
        (conf, "api", "region", "RegionOne"),
    }
    # The stack user runs it (no user argument): devstack's default.
    assert of(calls, "run_process") == [
        ("masakari-iim", "/opt/stack/data/venv/bin/masakari-iim --config-file " + conf)]
    assert of(calls, "stop_process") == [("masakari-iim",)]
    assert (tmp_path / "data" / "masakari-iim").is_dir()
    # Ordered, so a plugin that started before configuring would fail.
    names = [c[0] for c in calls if c[0] in ("setup_develop", "iniset", "run_process",
                                              "stop_process")]
    assert names[0] == "setup_develop" and names[-2:] == ["run_process", "stop_process"]


def test_written_config_passes_the_monitors_start_up_validation(tmp_path):
    proc, _ = run_phases(tmp_path, STACK)
    assert proc.returncode == 0, proc.stderr
    conf = cfg.ConfigOpts()
    iim_conf.register_opts(conf)
    conf(["--config-file", str(tmp_path / "etc" / "masakarimonitors.conf")],
         default_config_files=[])
    # What masakari-iim does before it starts: every value parses, no
    # unknown key in its group, the notifier exists.
    iim_conf.validate(conf)
    assert conf.introspectiveinstancemonitor.journal_path == str(
        tmp_path / "data" / "masakari-iim" / "iim-journal.sqlite")
    assert conf.api.auth_type == "password" and conf.api.password == "s3cret-pw"
    assert iim_conf.hostname(conf) == subprocess.check_output(
        ["hostname"], text=True).strip()


def test_settings_can_be_overridden_from_local_conf(tmp_path):
    proc, calls = run_phases(tmp_path, STACK, MASAKARI_IIM_NOTIFIER="log",
                             MASAKARI_IIM_HOSTNAME="compute-7",
                             MASAKARI_IIM_BIN_DIR="/usr/local/bin")
    assert proc.returncode == 0, proc.stderr
    ini = read_conf(tmp_path)
    assert ini.get("introspectiveinstancemonitor", "notifier") == "log"
    assert ini.get("DEFAULT", "hostname") == "compute-7"
    assert of(calls, "run_process")[0][1].startswith("/usr/local/bin/masakari-iim ")


def test_secret_stays_out_of_the_service_command(tmp_path):
    proc, calls = run_phases(tmp_path, STACK)
    assert proc.returncode == 0, proc.stderr
    assert "s3cret-pw" not in of(calls, "run_process")[0][1]


def test_post_config_keeps_what_another_plugin_wrote(tmp_path):
    conf = tmp_path / "etc" / "masakarimonitors.conf"
    conf.parent.mkdir()
    conf.write_text("[process]\nprocess_list_path = /etc/masakarimonitors/p.yaml\n")
    proc, _ = run_phases(tmp_path, ["stack post-config"])
    assert proc.returncode == 0, proc.stderr
    ini = read_conf(tmp_path)
    assert ini.get("process", "process_list_path") == "/etc/masakarimonitors/p.yaml"
    assert ini.get("api", "username") == "masakari"


def test_service_disabled_in_local_conf_does_nothing(tmp_path):
    # disable_service in local.conf wins over the settings' enable_service.
    proc, calls = run_phases(tmp_path, STACK + ["unstack", "clean"],
                             disabled="masakari-iim")
    assert proc.returncode == 0, proc.stderr
    acted = [c for c in calls if c[0] not in ("define_plugin", "plugin_requires")]
    assert acted == []
    assert not (tmp_path / "etc").exists()


def test_node_without_nova_compute_is_skipped_with_a_note(tmp_path):
    proc, calls = run_phases(tmp_path, STACK + ["unstack"],
                             enabled="key,masakari,masakari-api")
    assert proc.returncode == 0, proc.stderr
    assert of(calls, "run_process") == [] and of(calls, "iniset") == []
    assert of(calls, "setup_develop") == []
    assert any("n-cpu is not enabled" in c[0] for c in of(calls, "echo_summary"))


def test_refuses_to_run_beside_upstream_introspective_monitor(tmp_path):
    proc, calls = run_phases(
        tmp_path, STACK,
        enabled=COMPUTE + ",masakari-monitors,masakari-introspectiveinstancemonitor")
    assert proc.returncode != 0
    assert "disable_service masakari-introspectiveinstancemonitor" in proc.stderr
    assert of(calls, "setup_develop") == [] and of(calls, "run_process") == []


def test_upstream_monitor_name_alone_is_not_a_conflict(tmp_path):
    # masakari's settings enable masakari-introspectiveinstancemonitor by
    # default, but only the masakari-monitors service runs it.
    proc, calls = run_phases(
        tmp_path, STACK, enabled=COMPUTE + ",masakari-introspectiveinstancemonitor")
    assert proc.returncode == 0, proc.stderr
    assert len(of(calls, "run_process")) == 1


def test_extra_refuses_a_config_rewritten_after_post_config(tmp_path):
    proc, _ = run_phases(tmp_path, ["stack install", "stack post-config"])
    assert proc.returncode == 0, proc.stderr
    # What masakari's plugin does in its post-config phase when it is
    # listed after this one: the file is generated again from scratch.
    conf = tmp_path / "etc" / "masakarimonitors.conf"
    conf.write_text("[api]\n#username =\n[introspectiveinstancemonitor]\n")
    (tmp_path / "calls.tsv").unlink()
    proc, calls = run_phases(tmp_path, ["stack extra"])
    assert proc.returncode != 0
    assert "put 'enable_plugin masakari' before" in proc.stderr
    assert of(calls, "run_process") == []


def test_clean_removes_the_journal_directory(tmp_path):
    proc, _ = run_phases(tmp_path, STACK)
    assert proc.returncode == 0, proc.stderr
    state = tmp_path / "data" / "masakari-iim"
    (state / "iim-journal.sqlite").write_text("x")
    proc, calls = run_phases(tmp_path, ["unstack", "clean"])
    assert proc.returncode == 0, proc.stderr
    assert not state.exists()
    assert ("rm", "-rf", str(state)) in of(calls, "sudo")


def test_plugin_declares_itself_for_the_ansible_roles(tmp_path):
    # The devstack Ansible roles grep these lines literally to order
    # enable_plugin lines; a variable in them would defeat that.
    proc, calls = run_phases(tmp_path, [])
    assert proc.returncode == 0, proc.stderr
    assert of(calls, "define_plugin") == [("masakarimonitors-iim",)]
    assert of(calls, "plugin_requires") == [("masakarimonitors-iim", "masakari")]
    settings = (ROOT / "devstack" / "settings").read_text()
    assert "\ndefine_plugin masakarimonitors-iim\n" in settings
    assert "\nplugin_requires masakarimonitors-iim masakari\n" in settings


def test_system_packages_for_libvirt_python_are_listed():
    # devstack installs devstack/files/debs/<plugin name> before any phase;
    # libvirt-python is compiled against libvirt-dev via pkg-config.
    debs = (ROOT / "devstack" / "files" / "debs" / "masakarimonitors-iim").read_text()
    assert set(debs.split()) == {"libvirt-dev", "pkg-config"}

