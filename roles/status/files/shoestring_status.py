#!/usr/bin/python3
"""shoestring-status: one screen for the operator at 3 a.m. Every unit's state and memory
against its limit, memory pressure, swap and OOM kills, disk use, the guard and the disk's
burst balance, queues, campaigns and kill switches (from the app), the last backup, the
certificate's expiry and the last errors in the journal. Run as root. Ends with the problems
it saw and exits 1 when there is one, 0 when there is none.

What it looks at comes from /etc/shoestring-status.json (roles/status). The app's half (QUEUES
and APP) is the app's own: one run of `shoestring-manage status --json --sla QUEUE=SECONDS ...`
gives its lines and its problems. Each section reads its source and leaves what is a problem
to a pure function (the *_problems below, tests/test_status_screen.py); importing this module
reads nothing."""

import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "/etc/shoestring-status.json"
MIB = 1048576
# The guard writes its state every few seconds (GUARD_INTERVAL_S): older is a guard that stopped.
GUARD_STALE_S = 120


def run(*command, timeout=30):
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return 1, "", str(error)
    return result.returncode, result.stdout, result.stderr


def ago(seconds):
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def mib(value):
    return f"{int(value) / MIB:.0f}M" if str(value).isdigit() else "-"


def systemctl_show(units, properties):
    _, out, _ = run("systemctl", "show", "-p", ",".join(properties), *units)
    blocks = []
    for block in out.strip().split("\n\n"):
        blocks.append(dict(line.split("=", 1) for line in block.splitlines() if "=" in line))
    return blocks


def unit_problems(unit):
    """A unit that is not active is a problem, except a timer's oneshot job (the backup),
    which is inactive between runs."""
    active = unit.get("ActiveState")
    if active == "active" or (unit.get("Type") == "oneshot" and active == "inactive"):
        return []
    return [f"{unit['Id']} is {active}/{unit.get('SubState')}"]


def units_section(config, problems):
    _, out, _ = run(
        "systemctl", "list-units", "--all", "--plain", "--no-legend", *config["unit_patterns"]
    )
    units = [line.split()[0] for line in out.splitlines() if line.strip()]
    lines = ["UNITS                                   state              memory / max   restarts"]
    props = ["Id", "ActiveState", "SubState", "MemoryCurrent", "MemoryMax", "NRestarts", "Type"]
    for unit in systemctl_show(units, props) if units else []:
        state = f"{unit.get('ActiveState')}/{unit.get('SubState')}"
        current, limit = unit.get("MemoryCurrent", ""), unit.get("MemoryMax", "")
        memory = f"{mib(current)} / {mib(limit)}"
        if current.isdigit() and limit.isdigit():
            memory += f" {int(current) * 100 // int(limit):3d}%"
        restarts = unit.get("NRestarts") or "-"
        lines.append(f"  {unit['Id']:<38}{state:<19}{memory:<15}{restarts:>8}")
        problems += unit_problems(unit)
    return lines


def read_keyed(path):
    values = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            values[parts[0].rstrip(":")] = parts[1]
    return values


def pressure_some_avg10(first_line):
    """avg10 of /proc/pressure/memory's first line: `some avg10=1.23 avg60=... total=...`."""
    return float(first_line.split()[1].split("=")[1])


def memory_pressure_problems(some_avg10, warn):
    if some_avg10 >= warn:
        return [f"memory pressure: some avg10={some_avg10}"]
    return []


def memory_section(config, problems):
    meminfo = {key: int(value) * 1024 for key, value in read_keyed("/proc/meminfo").items()}
    vmstat = {key: int(value) for key, value in read_keyed("/proc/vmstat").items()}
    swap_used = meminfo["SwapTotal"] - meminfo["SwapFree"]
    lines = [
        "MEMORY",
        f"  available {mib(meminfo['MemAvailable'])} of {mib(meminfo['MemTotal'])}"
        f"   swap used {mib(swap_used)} of {mib(meminfo['SwapTotal'])}"
        f"   since boot: swapped in {vmstat.get('pswpin', 0)} pages,"
        f" OOM kills {vmstat.get('oom_kill', 0)}",
    ]
    try:
        pressure = Path("/proc/pressure/memory").read_text().splitlines()
        lines.append("  pressure " + "   ".join(pressure))
        some_avg10 = pressure_some_avg10(pressure[0])
        problems += memory_pressure_problems(some_avg10, config["memory_pressure_warn"])
    except (OSError, IndexError, ValueError):
        lines.append("  pressure: not available (kernel without PSI)")
    return lines


def disk_problems(path, used_percent, warn_percent):
    if used_percent >= warn_percent:
        return [f"disk {path} is {used_percent}% full"]
    return []


def disk_section(config, problems):
    lines = ["DISK"]
    seen = set()
    for path in config["disk_paths"]:
        if not os.path.exists(path):
            continue
        device = os.stat(path).st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(path)
        used = usage.used * 100 // usage.total
        lines.append(
            f"  {path:<28} {used:3d}% used, {usage.free / MIB / 1024:.1f} GiB free"
            f" of {usage.total / MIB / 1024:.1f} GiB"
        )
        problems += disk_problems(path, used, config["disk_used_warn_percent"])
    return lines


def guard_problems(state, age_s):
    """The guard's state file (age_s seconds old): CloudWatch out of reach, bulk work paused,
    or a guard that stopped reading the disk."""
    problems = []
    if state.get("cloudwatch_error"):
        problems.append(f"the guard cannot read CloudWatch: {state['cloudwatch_error']}")
    if state.get("paused"):
        problems.append(f"the guard paused bulk work: {state.get('reason', '')}")
    if age_s > GUARD_STALE_S:
        problems.append(f"the guard has not read the disk for {ago(age_s)}")
    return problems


def guard_cloudwatch_line(state, now):
    """What the guard last had from CloudWatch, named by the metric it reads (gp2: the volume's
    BurstBalance; gp3: the instance's EBSIOBalance%); None where it does not ask."""
    # A guard from before gp3 was modelled wrote no metric: it read BurstBalance.
    metric = state.get("cloudwatch_metric", "BurstBalance")
    if state.get("cloudwatch_error"):
        return f"  CloudWatch: {state['cloudwatch_error']}; the model alone"
    if state.get("cloudwatch_burst_balance_percent") is not None:
        return (
            f"  CloudWatch's {metric} {state['cloudwatch_burst_balance_percent']:.1f}%"
            f" (datapoint from {ago(now - state['cloudwatch_datapoint_at'])};"
            " the model was reset to it)"
        )
    if state.get("cloudwatch_asked"):
        return f"  CloudWatch's {metric}: no datapoint yet; the model alone"
    return None


def guard_section(config, problems):
    state_file = Path(config["guard_state_file"])
    if not state_file.exists():
        return ["GUARD AND BURST BALANCE", "  the guard is not running on this host"]
    state = json.loads(state_file.read_text())
    age = time.time() - state.get("time", 0)
    lines = [
        "GUARD AND BURST BALANCE",
        f"  bulk work {'PAUSED' if state.get('paused') else 'running'}"
        f" ({state.get('reason', '')}), last reading {ago(age)}",
        f"  burst balance {state.get('burst_balance_percent', 0):.1f}%"
        f" ({state.get('volume', '?')}), {state.get('iops', 0):.0f} IOPS now,"
        f" memory pressure some avg10={state.get('memory_some_avg10', 0)}",
    ]
    cloudwatch = guard_cloudwatch_line(state, time.time())
    if cloudwatch:
        lines.append(cloudwatch)
    problems += guard_problems(state, age)
    return lines


def sla_arguments(queue_sla_s):
    """The status command's arguments for each queue's SLA (seconds)."""
    return [arg for queue, sla in queue_sla_s.items() for arg in ("--sla", f"{queue}={sla}")]


def app_result(code, out, err):
    """The app's lines and problems from one run of `shoestring-manage status --json`: its
    `text` and its `problems`, or, when it failed, the last line it said as the problem. Its
    JSON is the last line of its output."""
    if code != 0:
        return (
            ["APP", "  shoestring-manage status failed (see problems)"],
            ["the app's status failed: " + (err.strip().splitlines() or ["?"])[-1]],
        )
    status = json.loads(out.strip().splitlines()[-1])
    return status["text"].splitlines(), status["problems"]


OLDER_RELEASE = "the running release's status command checks no queue SLA (rolled back?)"


def app_section(config, problems):
    manage = config["manage"]
    if not os.path.exists(manage):
        return []
    command = [manage, "status", "--json", *sla_arguments(config["queue_sla_s"])]
    code, out, err = run(*command, timeout=60)
    if code != 0 and "unrecognized arguments" in err:
        # A release from before the command took --sla (a rollback): its own screen, as it
        # draws it, and the SLAs said to be unchecked.
        code, out, err = run(manage, "status", timeout=60)
        if code == 0:
            problems.append(OLDER_RELEASE)
            return ["APP", *(f"  {line}" for line in out.strip().splitlines())]
    lines, found = app_result(code, out, err)
    problems += found
    return lines


def backup_age_problems(age_s, max_age_s):
    """The newest dump, age_s seconds old (None: there is none), older than max_age_s."""
    if age_s is None:
        return ["no backup yet: systemctl start shoestring-backup.service"]
    if age_s > max_age_s:
        return [f"the last backup is {ago(age_s)}"]
    return []


def backup_run_problems(result):
    """The backup service's last Result (systemd's; None when it never ran)."""
    if result not in (None, "success"):
        return [f"the last backup run failed: {result}"]
    return []


def backup_section(config, problems):
    backup_dir = Path(config["backup_dir"])
    if not backup_dir.exists():
        return []
    dumps = sorted(backup_dir.glob("*.dump"), key=lambda path: path.stat().st_mtime)
    lines = ["BACKUP"]
    age = None
    if dumps:
        newest = dumps[-1]
        age = time.time() - newest.stat().st_mtime
        lines.append(
            f"  last {newest} ({newest.stat().st_size / MIB:.1f} MiB), {ago(age)};"
            f" {len(dumps)} kept"
        )
    else:
        lines.append("  no backup yet")
    problems += backup_age_problems(age, config["backup_max_age_s"])
    service, timer = systemctl_show(
        ["shoestring-backup.service", "shoestring-backup.timer"],
        ["Result", "ExecMainStatus", "NextElapseUSecRealtime"],
    )
    lines.append(
        f"  last run: {service.get('Result', '?')} (exit {service.get('ExecMainStatus', '?')}),"
        f" next: {timer.get('NextElapseUSecRealtime') or '?'}"
    )
    problems += backup_run_problems(service.get("Result"))
    return lines


def certificate_problems(days, warn_days):
    if days < warn_days:
        return [f"the certificate expires in {days:.0f} days"]
    return []


def certificate_section(config, problems):
    if not config.get("https_port"):
        return []
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        sock = socket.create_connection(("127.0.0.1", config["https_port"]), timeout=5)
        with context.wrap_socket(sock, server_hostname=config["server_name"]) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError as error:
        problems.append(f"nginx does not answer TLS on port {config['https_port']}: {error}")
        return ["CERTIFICATE", f"  no answer on port {config['https_port']}"]
    pem = ssl.DER_cert_to_PEM_cert(der)
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate", "-subject"],
        input=pem,
        capture_output=True,
        text=True,
        check=False,
    )
    fields = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    expires = ssl.cert_time_to_seconds(fields["notAfter"])
    days = (expires - time.time()) / 86400
    problems += certificate_problems(days, config["certificate_warn_days"])
    return [
        "CERTIFICATE",
        f"  {fields.get('subject', '').strip()}: expires {fields['notAfter']} ({days:.0f} days)",
    ]


def errors_section(config, problems):
    command = [
        "journalctl",
        "--no-pager",
        "-q",
        "-p",
        "err",
        "--since",
        "-24h",
        "-n",
        str(config["errors_shown"]),
        "-o",
        "short-iso",
    ]
    for unit in config["error_units"]:
        command += ["-u", unit]
    _, out, _ = run(*command)
    lines = out.strip().splitlines()
    return ["LAST ERRORS (24h)"] + ([f"  {line[:150]}" for line in lines] or ["  none"])


SECTIONS = [
    units_section,
    memory_section,
    disk_section,
    guard_section,
    app_section,
    backup_section,
    certificate_section,
    errors_section,
]


def main():
    config = json.loads(Path(CONFIG).read_text())
    if os.geteuid() != 0:
        print("shoestring-status: run it as root (sudo shoestring-status)", file=sys.stderr)
        return 2
    now = datetime.datetime.now(datetime.UTC)
    print(
        f"{socket.gethostname()}  {now:%Y-%m-%d %H:%M:%S} UTC"
        f"  up {ago(float(Path('/proc/uptime').read_text().split()[0])).removesuffix(' ago')}"
        f"  load {os.getloadavg()[0]:.2f}"
    )
    problems = []
    for section in SECTIONS:
        try:
            lines = section(config, problems)
        except Exception as error:  # one broken source must not hide the rest of the screen
            lines = [
                f"{section.__name__.removesuffix('_section').upper()}: could not read: {error}"
            ]
            problems.append(lines[0])
        if lines:
            print("\n".join(lines))
    print("PROBLEMS: " + ("none" if not problems else ""))
    for problem in problems:
        print(f"  - {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
