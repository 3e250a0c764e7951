"""The test bed: everything that builds and runs the real systems Graft is tested and benchmarked
against, kept apart from the test suite so that the fixtures (tests/), the benchmarks (bench/) and
the scripts (scripts/cluster.sh, scripts/images.sh) share one copy.

* :mod:`testbed.controlplane` (+ :mod:`testbed.binaries`): etcd, kube-apiserver and
  kube-controller-manager on loopback, from the binaries scripts/controlplane.sh builds.
* :mod:`testbed.kubenode`, :mod:`testbed.nodehost`, :mod:`testbed.nodeconfig`: the one-node
  cluster (containerd, kubelet, kube-proxy, kube-scheduler, CoreDNS) and its host-wide state;
  :mod:`testbed.cluster` is ``python -m testbed.cluster up|down|status`` (scripts/cluster.sh).
* :mod:`testbed.addons`: the KubeRay operator and Kueue, run out of cluster.
* :mod:`testbed.s3server`: a real S3 server (versitygw) on loopback.
* :mod:`testbed.oci`: the one OCI image writer (scripts/images.sh's layers and the node's own images).
* :mod:`testbed.operator`: ``graft operator`` as a subprocess; :mod:`testbed.ray_head`: a local Ray
  head; :mod:`testbed.job_driver` and :mod:`testbed.jobdocs`: graft.jobs run as a RayJob runs it.
* :mod:`testbed.process`, :mod:`testbed.ports`: the one process wrapper (log file, stop by
  process group, log tail), ``wait_until`` and the one free-port helper.

Not part of the graft distribution (the wheel packages ``graft*`` only). The modules the scripts
run (cluster, controlplane, kubenode, nodehost, nodeconfig, oci, process, ports, binaries) use the
standard library only, so any Python 3.11 runs them.
"""
