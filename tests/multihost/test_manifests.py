"""deploy/k8s follows from the programs' own settings: every SLUICE_* key of a
ConfigMap is a setting of each program that reads that map (its --help), and each
pod's terminationGracePeriodSeconds is above the drain its program is configured
with. The bus is not open: CURVE is on in every program, its keys come from the
Secrets deploy/k8s/keygen makes (and they work: a real broker run with them lets in
a listed key and no other), the placeholders are refused, and a NetworkPolicy lets
each program reach only the broker ports it has settings for. No cluster needed
(none exists on the development machine): the manifests are read as text, or as
YAML where volumes are followed to Secrets."""
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


# ---- CurveZMQ and the NetworkPolicy (issue 16): the bus is not open -------------------
# These read the manifests as YAML (python3-yaml) to follow volumes to Secrets.
KEYGEN = os.path.join(K8S, "keygen")
CTL = os.path.join(procs.BUILD_DIR, "common/ctl/sluicectl")
# the broker port each endpoint setting names (the broker's ConfigMap binds them)
BUS = {"SLUICE_FRONTEND": 5550, "SLUICE_BACKEND": 5551, "SLUICE_EVENTS_IN": 5552,
       "SLUICE_EVENTS_OUT": 5553}


def docs(name):
    import yaml
    with open(os.path.join(K8S, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def workloads():
    """{program: (pod spec, container, merged ConfigMap settings)}."""
    maps = config_maps()
    out = {}
    for f in ("broker.yaml", "dbworker.yaml", "streamworker.yaml", "gateway.yaml"):
        for d in docs(f):
            if d["kind"] in ("Deployment", "StatefulSet"):
                spec = d["spec"]["template"]["spec"]
                c = spec["containers"][0]
                settings = {}
                for ref in c.get("envFrom", []):
                    if "configMapRef" in ref:
                        settings.update(maps[ref["configMapRef"]["name"]])
                out[c["command"][0]] = (d, spec, c, settings)
    return out


def example_secrets():
    return {d["metadata"]["name"]: set(d["stringData"]) for d in docs("secrets.example.yaml")}


def secret_file(spec, container, path):
    """(Secret name, key) that path is in the container, through its volume mounts."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        if os.path.dirname(path) == m["mountPath"].rstrip("/"):
            v = volumes[m["name"]]
            assert "secret" in v, "%s is mounted from %s, not a Secret" % (path, v)
            return v["secret"]["secretName"], os.path.basename(path)
    raise AssertionError("nothing is mounted at %s" % os.path.dirname(path))


def secret_dir(spec, container, path):
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        if path.rstrip("/") == m["mountPath"].rstrip("/"):
            return volumes[m["name"]]["secret"]["secretName"]
    raise AssertionError("nothing is mounted at %s" % path)


def test_curve_is_on_in_every_program():
    """Every program has its key pair (and the brokers' public key, or for the broker
    the allow folder) set, each file inside a Secret that secrets.example.yaml
    declares, readable by the pod's non-root user (fsGroup) and by nobody else."""
    secrets = example_secrets()
    for program, (_, spec, c, settings) in workloads().items():
        assert settings.get("SLUICE_CURVE_CERT"), "%s: CURVE off (no SLUICE_CURVE_CERT)" % program
        needed = ["SLUICE_CURVE_CERT"]
        if program == "sluice-broker":
            allow = settings.get("SLUICE_CURVE_ALLOW")
            assert allow, "the broker lets any key in (no SLUICE_CURVE_ALLOW)"
            name = secret_dir(spec, c, allow)
            assert name in secrets and secrets[name], name
        else:
            needed.append("SLUICE_CURVE_BROKER_CERT")
        for key in needed:
            assert settings.get(key), "%s: %s not set" % (program, key)
            name, item = secret_file(spec, c, settings[key])
            assert item in secrets.get(name, ()), "%s: Secret %s has no %s" % (program, name, item)
            if key == "SLUICE_CURVE_CERT":   # the pair: PATH_secret beside PATH
                assert item + "_secret" in secrets[name], (program, name)
        assert spec["securityContext"].get("fsGroup") == spec["securityContext"]["runAsUser"]
        for v in spec["volumes"]:
            if "secret" in v:
                assert v["secret"].get("defaultMode") == 0o440, (program, v)
    # every client holds the brokers' public key only, never their secret
    for program, (_, spec, c, settings) in workloads().items():
        if program != "sluice-broker":
            name, _ = secret_file(spec, c, settings["SLUICE_CURVE_BROKER_CERT"])
            assert not any(k.endswith("_secret") for k in secrets[name]), name


def test_keygen_makes_the_secrets_the_manifests_mount(tmp_path):
    """deploy/k8s/keygen (sluicectl keygen per role) writes, 0600, exactly the
    Secrets secrets.example.yaml declares, with real and distinct keys."""
    import yaml
    out = tmp_path / "curve-secrets.yaml"
    r = subprocess.run([KEYGEN, str(out)], env=dict(os.environ, SLUICECTL=CTL),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o600)
    made = {d["metadata"]["name"]: d["stringData"] for d in yaml.safe_load_all(out.read_text())
            if d}
    example = {n: k for n, k in example_secrets().items() if n.startswith("sluice-curve-")}
    assert {n: set(k) for n, k in made.items()} == example
    publics = {}
    for name, files in made.items():
        for item, text in files.items():
            key = re.search(r'public-key = "(.{40})"', text).group(1)
            has_secret = re.search(r'secret-key = "(.{40})"', text) is not None
            assert has_secret == item.endswith("_secret"), (name, item)
            publics.setdefault(item.replace("_secret", ""), set()).add(key)
    # the same role's key wherever its files appear, and one key per role
    assert all(len(k) == 1 for k in publics.values()), publics
    assert len({next(iter(k)) for k in publics.values()}) == len(publics)
    r = subprocess.run([KEYGEN, str(out)], env=dict(os.environ, SLUICECTL=CTL),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not overwritten" in r.stderr


def mount_like_kubernetes(folder, files):
    """A Secret volume as the kubelet lays it out: the files in a timestamped
    folder, ..data a link to it, each name a link through ..data."""
    os.makedirs(folder)
    stamp = os.path.join(folder, "..2026_01_01_00_00_00.000000001")
    os.makedirs(stamp)
    for name, text in files.items():
        with open(os.path.join(stamp, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(stamp, name), 0o440)
        os.symlink(os.path.join("..data", name), os.path.join(folder, name))
    os.symlink(os.path.basename(stamp), os.path.join(folder, "..data"))


def test_mounted_secrets_let_in_listed_keys_only(tmp_path):
    """The keys keygen makes, mounted where the manifests mount them (in a copy of
    the kubelet's layout), run a real broker with its ConfigMap's CURVE settings: the
    gateway's key gets an answer, a key of no role gets none."""
    import yaml
    import zmq
    import smp
    out = tmp_path / "curve-secrets.yaml"
    subprocess.run([KEYGEN, str(out)], env=dict(os.environ, SLUICECTL=CTL), check=True,
                   capture_output=True, timeout=60)
    made = {d["metadata"]["name"]: d["stringData"] for d in yaml.safe_load_all(out.read_text())
            if d}
    def mounted(spec, c, settings):
        root = str(tmp_path / c["name"])  # each pod its own file system
        for m in c.get("volumeMounts", []):
            v = {v["name"]: v for v in spec["volumes"]}[m["name"]]
            if "secret" in v:
                mount_like_kubernetes(root + m["mountPath"], made[v["secret"]["secretName"]])
        return {k: root + v for k, v in settings.items() if k.startswith("SLUICE_CURVE_")}

    w = workloads()
    broker_env = mounted(*w["sluice-broker"][1:])
    gateway = mounted(*w["sluice-gateway"][1:])
    ports = [procs.free_port() for _ in range(4)]
    endpoints = dict(zip(("frontend", "backend", "events_in", "events_out"),
                         map(procs.tcp, ports)))
    args = [procs.binary("broker")] + [x for k, v in endpoints.items()
                                       for x in ("--" + k.replace("_", "-"), v)]
    broker = procs.Proc(args, env=broker_env, name="broker-k8s-curve")
    try:
        broker.wait_log("listening")
        listed = smp.Client(endpoints["frontend"], curve=(gateway["SLUICE_CURVE_CERT"],
                                                          gateway["SLUICE_CURVE_BROKER_CERT"]))
        body = listed.request("sys", {"op": "status"})
        assert body["status"] == 200, body
        listed.close()
        stranger = str(tmp_path / "stranger.cert")
        subprocess.run([CTL, "keygen", stranger], check=True, capture_output=True)
        intruder = smp.Client(endpoints["frontend"],
                              curve=(stranger, gateway["SLUICE_CURVE_BROKER_CERT"]))
        try:  # refused at the handshake: no connection to queue on (zmq.Again) also counts
            intruder.sock.send_multipart([b"", smp.PROTO, smp.REQUEST, b"sys", b"x-1",
                                          smp.u32(1000), smp.pack({"op": "status"})],
                                         flags=zmq.NOBLOCK)
            assert not intruder.sock.poll(2000), "a key of no role got an answer"
        except zmq.Again:
            pass
        intruder.close()
    finally:
        broker.stop()


def test_placeholders_are_refused(tmp_path):
    """secrets.example.yaml applied as it is: the programs refuse to start (no open
    bus by mistake)."""
    ex = {d["metadata"]["name"]: d["stringData"] for d in docs("secrets.example.yaml")}
    for program, kind, env in (
            ("sluice-broker", "broker", {"SLUICE_CURVE_CERT": ("sluice-curve-broker", "broker.cert"),
                                         "SLUICE_CURVE_ALLOW": ("sluice-curve-allow", None)}),
            ("sluice-gateway", "gateway", {
                "SLUICE_CURVE_CERT": ("sluice-curve-gateway", "gateway.cert"),
                "SLUICE_CURVE_BROKER_CERT": ("sluice-curve-broker-public", "broker.cert")})):
        settings = {}
        for key, (secret, item) in env.items():
            folder = str(tmp_path / program / secret)
            if not os.path.exists(folder):
                mount_like_kubernetes(folder, ex[secret])
            settings[key] = os.path.join(folder, item) if item else folder
        ports = [procs.free_port() for _ in range(5)]
        args = [procs.binary(kind)]
        if kind == "broker":
            args += ["--frontend", procs.tcp(ports[0]), "--backend", procs.tcp(ports[1]),
                     "--events-in", procs.tcp(ports[2]), "--events-out", procs.tcp(ports[3])]
        else:
            args += ["--port", str(ports[4]), "--frontend", procs.tcp(ports[0])]
        r = subprocess.run(args, env=dict(os.environ, **settings), capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0, (program, r.stderr)
        assert "is not a CurveZMQ certificate" in r.stderr, (program, r.stderr)


def test_network_policy_closes_the_bus():
    """The brokers' ports take connections only from Sluice's pods, each only on the
    ports of the endpoint settings its program has; workers take none; the policy
    file is part of the kustomization."""
    assert "networkpolicy.yaml" in read("kustomization.yaml")
    policies = [d for d in docs("networkpolicy.yaml") if d["kind"] == "NetworkPolicy"]
    labels = {p: d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
              for p, (d, _, _, _) in workloads().items()}
    broker = [p for p in policies
              if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
              == labels["sluice-broker"]]
    assert len(broker) == 1, "no NetworkPolicy selects the broker pods"
    spec = broker[0]["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    allowed = {}
    for rule in spec["ingress"]:
        assert rule.get("from"), "a rule lets anyone in: %r" % rule
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "not a pod of Sluice: %r" % peer
            name = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for port in rule["ports"]:
                allowed.setdefault(name, set()).add(port["port"])
    for program, label in labels.items():
        if program == "sluice-broker":
            continue
        wanted = {BUS[k] for k in settings_of(program) if k in BUS}
        assert allowed.get(label) == wanted, (program, allowed.get(label), wanted)
    assert set(allowed) <= set(labels.values())
    closed = [p for p in policies if p["spec"].get("ingress") == []
              and p["spec"]["policyTypes"] == ["Ingress"]]
    names = set()
    for p in closed:
        for e in p["spec"]["podSelector"].get("matchExpressions", []):
            names |= set(e["values"])
    assert {labels["sluice-dbworker"], labels["sluice-streamworker"]} <= names
