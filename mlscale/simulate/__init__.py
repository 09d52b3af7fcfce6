"""``mlscale simulate``: replay Kubernetes autoscaling on a load profile, in seconds.

A simulated Deployment, HPA, metrics pipeline, scheduler and cluster autoscaler
on a GKE node pool, with each ready pod serving like the pod ``mlscale plan``
measured. The rules and their sources are in ``hpa``, ``autoscaler``,
``metrics`` and ``cluster``; the queueing model in ``service``; the tick loop in
``engine``. Everything takes its clock as an argument: no sleeps, no threads.
"""
