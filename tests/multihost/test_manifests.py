"""deploy/k8s follows from the programs' own settings: every SLUICE_* key of a
ConfigMap is a setting of each program that reads that map (its --help), and each
pod's terminationGracePeriodSeconds is above the drain its program is configured
with. No cluster needed (none exists on the development machine): the manifests
are read as text, in the plain form they are written in."""
import os
import re
import subprocess

import procs

K8S = os.path.join(procs.SOURCE_DIR, "deploy", "k8s")
PROGRAMS = {"sluice-broker": "broker", "sluice-dbworker": "dbworker",
            "sluice-streamworker": "streamworker", "sluice-gateway": "gateway"}
# the setting each program's SIGTERM drain is bounded by, in seconds
DRAIN = {"sluice-broker": ("SLUICE_DRAIN_MS", 1000), "sluice-gateway": ("SLUICE_DRAIN_MS", 1000),
         "sluice-dbworker": ("SLUICE_SHUTDOWN_TIMEOUT_S", 1),
         "sluice-streamworker": ("SLUICE_SHUTDOWN_GRACE_MS", 1000)}


def read(name):
    with open(os.path.join(K8S, name)) as f:
        return f.read()


def config_maps():
    """{map name: {key: value}} from config.yaml."""
    maps = {}
    for doc in read("config.yaml").split("\n---"):
        name = re.search(r"^metadata:\n  name: (\S+)", doc, re.M).group(1)
        maps[name] = dict(re.findall(r'^  (SLUICE_[A-Z0-9_]+): "([^"]*)"', doc, re.M))
    return maps


def pods():
    """[(program, [config map names], grace seconds, preStop sleep seconds)]."""
    out = []
    for f in ("broker.yaml", "dbworker.yaml", "streamworker.yaml", "gateway.yaml"):
        text = read(f)
        program = re.search(r'command: \["(sluice-[a-z]+)"\]', text).group(1)
        maps = re.findall(r"configMapRef: \{name: (\S+)\}", text)
        grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", text).group(1))
        pre = re.search(r'command: \["sleep", "(\d+)"\]', text)
        out.append((program, maps, grace, int(pre.group(1)) if pre else 0))
    return out


def settings_of(program):
    r = subprocess.run([procs.binary(PROGRAMS[program]), "--help"], stdout=subprocess.PIPE,
                       timeout=30, check=True)
    flags = re.findall(r"^  --([a-z0-9-]+)", r.stdout.decode(), re.M)
    return {"SLUICE_" + f.replace("-", "_").upper() for f in flags} - {"SLUICE_CONFIG"}


def test_every_key_is_a_setting_of_its_program():
    """A map read by one program holds only its settings; the shared broker lists
    hold only keys that some program reading them uses (the others ignore them)."""
    maps = config_maps()
    readers = {}
    for program, names, _, _ in pods():
        for name in names:
            assert name in maps, "%s reads ConfigMap %s, which config.yaml lacks" % (program, name)
            readers.setdefault(name, []).append(program)
    assert set(readers) == set(maps), "ConfigMaps nobody reads: %s" % (set(maps) - set(readers))
    for name, programs in readers.items():
        known = set().union(*(settings_of(p) for p in programs))
        unknown = set(maps[name]) - known
        assert not unknown, "%s: %s are settings of none of %s" % (name, unknown, programs)
    # every program gets all four broker lists it has settings for
    lists = set(maps["sluice-brokers"])
    for program, programs in ((p, n) for p, n, _, _ in pods() if "sluice-brokers" in n):
        wanted = settings_of(program) & {"SLUICE_FRONTEND", "SLUICE_BACKEND", "SLUICE_EVENTS_IN",
                                         "SLUICE_EVENTS_OUT"}
        assert wanted <= lists, (program, wanted - lists)
    for key in lists:
        assert maps["sluice-brokers"][key].count("tcp://") == 2, key


def test_grace_period_covers_the_drain():
    maps = config_maps()
    for program, names, grace, pre_stop in pods():
        key, per_second = DRAIN[program]
        values = [m[key] for m in (maps[n] for n in names) if key in m]
        assert values, "%s: %s not set in its ConfigMaps" % (program, key)
        drain_s = int(values[-1]) / per_second
        assert grace > pre_stop + drain_s, (program, grace, pre_stop, drain_s)


def test_container_env_names_settings():
    """The image's ENV defaults (installed paths) are settings some program has."""
    path = os.path.join(procs.SOURCE_DIR, "deploy", "container", "Containerfile")
    with open(path) as f:
        keys = set(re.findall(r"\b(SLUICE_[A-Z0-9_]+)=", f.read()))
    assert keys, "no SLUICE_* defaults in the Containerfile"
    known = set().union(*(settings_of(p) for p in PROGRAMS))
    assert keys <= known, keys - known
