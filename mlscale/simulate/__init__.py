"""``mlscale simulate``: replay Kubernetes autoscaling on a load profile, in seconds.

A simulated Deployment, HPA, metrics pipeline, scheduler and cluster autoscaler
on a GKE node pool, with each ready pod serving like the pod ``mlscale plan``
measured. The rules and their sources are in ``hpa``, ``autoscaler``,
``metrics`` and ``cluster``; the pod's queue in ``queue``, fitted to a plan in
``calibration`` and tabulated for the tick loop in ``tables``; the tick loop in
``engine``; its summary.json in ``results``; the in-flight target a concurrency
autoscaler holds, which ``mlscale k8s render --policy inflight`` writes too, in
``inflight``.
Everything takes its clock as an argument: no sleeps, no threads.
"""
