"""What `splitpoint --help` and each command's help say about it: the one-line summary, the usage
line and the examples (the parser's grammar is splitpoint/cli_parser.py). The examples are run by
tests (tests/unit/test_cli_errors.py), so they stay true."""

from __future__ import annotations

#: name -> (one-line summary, usage line, examples); the order is the overview's order
COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "demo": (
        "partition the bundled digits model, start a server and an agent on loopback, stream frames",
        "splitpoint demo [--model M] [--frames N] [--split K] [--workdir DIR] [--rebuild]",
        ("splitpoint demo", "splitpoint demo --frames 50 --split 3"),
    ),
    "partition": (
        "split a Keras model into int8 heads and float tails (a bundle)",
        "splitpoint partition MODEL -o BUNDLE [--calibration DIR | --calibration-random N] [options]",
        ("splitpoint partition digits-cnn -o digits-bundle/",
         "splitpoint partition my_model.keras -o bundle/ --calibration frames/",
         "splitpoint partition mobilenetv2 -o mnv2-bundle/ --input-size 96 --calibration-random 16 --splits 40,89",
         "splitpoint partition my_detector.keras -o det-bundle/ --calibration frames/ --detection decoder.toml"),
    ),
    "inspect": (
        "show a bundle's splits and check its files",
        "splitpoint inspect BUNDLE",
        ("splitpoint inspect digits-bundle/",),
    ),
    "cloud": (
        "run the server: tails on TensorFlow behind gRPC",
        "splitpoint cloud --bundle DIR [--listen HOST:PORT] (--tls-cert F --tls-key F | --insecure) [options]",
        ("splitpoint cloud --bundle digits-bundle/ --listen 127.0.0.1:50051 --insecure   # loopback, development",
         "splitpoint cloud --bundle bundle/ --listen 0.0.0.0:50051 --tls-cert certs/server.pem "
         "--tls-key certs/server.key --tls-client-ca certs/ca.pem",
         "splitpoint cloud --config /etc/splitpoint/cloud.toml"),
    ),
    "edge": (
        "run the agent: heads on the Edge TPU or CPU, the rest offloaded",
        "splitpoint edge --bundle DIR --source SRC [--cloud HOST:PORT] [--split K | --policy-name P] [options]",
        ("splitpoint edge --bundle digits-bundle/ --source synthetic:50 --cloud 127.0.0.1:50051 --split 3 --insecure",
         "splitpoint edge --bundle bundle/ --source camera:0 --fps 10 --cloud server.example:50051 "
         "--tls-ca certs/ca.pem --tls-cert certs/client.pem --tls-key certs/client.key --policy-name min-latency "
         "--policy-edge-profile edge-profile.json --policy-cloud-profile cloud-profile.json",
         "splitpoint edge --config /etc/splitpoint/edge.toml"),
    ),
    "results": (
        "what a run did, from its results logs: frames, where they ran, latency, fallbacks, failures",
        "splitpoint results LOG [LOG ...] [--json]",
        ("splitpoint results /var/lib/splitpoint/results.jsonl",
         "splitpoint results drone-*/results.jsonl --json > site.json"),
    ),
    "profile": (
        "measure every split's head (edge) or tail (cloud) latency; show a profile",
        "splitpoint profile {edge,cloud,reference} --bundle DIR -o FILE | splitpoint profile show FILE",
        ("splitpoint profile edge --bundle bundle/ --device edgetpu -o edge-profile.json",
         "splitpoint profile cloud --bundle bundle/ -o cloud-profile.json",
         "splitpoint profile show edge-profile.json"),
    ),
    "policy": (
        "explain what a split policy would choose",
        "splitpoint policy explain --bundle DIR --bandwidth RATE --rtt TIME [options]",
        ("splitpoint policy explain --bundle bundle/ --edge-profile edge-profile.json "
         "--cloud-profile cloud-profile.json --bandwidth 5Mbps --rtt 40ms",
         "splitpoint policy explain --bundle bundle/ --edge-profile edge-profile.json "
         "--cloud-profile cloud-profile.json --bandwidth 2Mbps --rtt 80ms --policy min-energy --deadline-ms 200 "
         "--power-table power.toml"),
    ),
    "doctor": (
        "check the Edge TPU, power supply, runtimes, bundle, cloud, TLS, clock and disk, in plain words",
        "splitpoint doctor [--config FILE] [--bundle DIR] [--cloud HOST:PORT] [--device D] [options]",
        ("splitpoint doctor --config /etc/splitpoint/edge.toml",
         "splitpoint doctor --bundle bundle/ --device edgetpu --cloud server.example:50051 --tls-ca certs/ca.pem"),
    ),
    "certs": (
        "make a development CA and server/client certificates for (mutual) TLS",
        "splitpoint certs [-o DIR] [--server-name NAMES] [--clients NAMES] [--force]",
        ("splitpoint certs -o certs/ --server-name server.example,10.0.0.5",
         "splitpoint certs -o certs/ --server-name server.example --clients drone-01,drone-02,drone-03",
         "splitpoint certs -o certs/ --clients \"$(seq -s, -f 'drone-%02g' 50)\"   # drone-01 ... drone-50"),
    ),
    "bench": (
        "measure every split's real end-to-end latency, the scheduler's choices, traces, throughput",
        "splitpoint bench [--bundle DIR] [--json FILE] [--markdown FILE] [--plots DIR] [options]",
        ("splitpoint bench --smoke --json smoke.json",
         "splitpoint bench --bundle mnv2-bundle/ --edge-slowdown 75 --json out.json --markdown out.md --plots img/"),
    ),
    "loadtest": (
        "emulate a fleet of drones against a server or replicas: frames/s, latency, refusals, each replica's share",
        "splitpoint loadtest --bundle DIR --target T [--agents N] [--fps F] [--split K] [--duration S] [options]",
        ("splitpoint loadtest --bundle digits-bundle/ --target 127.0.0.1:50051 --agents 50 --fps 5 --insecure",
         # the fleet of docs/scaling.md: mutual TLS, a certificate per drone (`certs --clients`), a token
         "splitpoint loadtest --bundle bundle/ --target dns:///splitpoint-cloud.splitpoint.svc.cluster.local:50051 "
         "--agents 200 --fps 10 --split 3 --duration 60 --json fleet.json --tls-ca certs/ca.pem "
         "--tls-client-dir certs/clients --token-file certs/token"),
    ),
}

EXIT_CODES = "exit codes: 0 success; 1 the run failed; 2 a usage, configuration or input error (the message names it)"
