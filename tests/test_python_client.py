"""The official Python `kubernetes` client against skiff: create, list, watch, patch, delete."""
import threading

from kubernetes import client, config, watch


def deployment(name, replicas=2):
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[
                    client.V1Container(name="api", image="ml-api:v1",
                                       ports=[client.V1ContainerPort(container_port=8080)]),
                ]),
            ),
        ),
    )


def test_deployment_lifecycle(cluster):
    api_client = config.new_client_from_config(config_file=cluster.kubeconfig)
    apps = client.AppsV1Api(api_client)

    created = apps.create_namespaced_deployment("default", deployment("py-api"))
    assert created.metadata.uid
    assert created.spec.strategy.type == "RollingUpdate"  # server-side defaulting
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

    names = [d.metadata.name for d in apps.list_namespaced_deployment("default").items]
    assert names == ["py-api"]

    events = []
    w = watch.Watch()
    rv = created.metadata.resource_version

    def watcher():
        for ev in w.stream(apps.list_namespaced_deployment, "default", resource_version=rv, timeout_seconds=20):
            events.append((ev["type"], ev["object"].metadata.name, ev["object"].spec.replicas))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()

    patched = apps.patch_namespaced_deployment("py-api", "default", {"spec": {"replicas": 4}})
    assert patched.spec.replicas == 4
    assert patched.metadata.generation == 2

    apps.delete_namespaced_deployment("py-api", "default")
    t.join(timeout=30)
    assert not t.is_alive(), "watch did not see the delete"
    # The deployment controller also writes status, so the patch is one MODIFIED among others.
    assert ("MODIFIED", "py-api", 4) in events
    assert all(e[0] == "MODIFIED" for e in events[:-1])
    assert events[-1][0] == "DELETED"
    assert apps.list_namespaced_deployment("default").items == []
