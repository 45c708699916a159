//! Conversion of workload messages: Deployment, Job, CronJob, and the autoscaling, disruption
//! budget and priority objects that govern them.

use k8s_pb::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_pb::api::autoscaling::v1::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    HorizontalPodAutoscalerStatus,
};
use k8s_pb::api::batch::v1::{
    CronJob, CronJobSpec, CronJobStatus, Job, JobSpec, JobStatus, JobTemplateSpec,
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule, SuccessPolicy, SuccessPolicyRule,
};
use k8s_pb::api::policy::v1::{
    PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
};
use k8s_pb::api::scheduling::v1::PriorityClass;
use serde_json::Value;

use super::core::object_reference;
use super::json::{Fields, child, reject};
use super::meta::{int_or_string, label_selector, object_meta, opt_time};
use super::pod::pod_template_spec;
use crate::error::ApiError;

pub(super) fn deployment(d: Deployment, f: &mut Fields) -> Result<(), ApiError> {
    let Deployment {
        metadata,
        spec,
        status,
    } = d;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value("spec", deployment_spec(spec.unwrap_or_default(), "spec")?)
        .value(
            "status",
            deployment_status(status.unwrap_or_default(), "status")?,
        );
    Ok(())
}

fn deployment_spec(s: DeploymentSpec, path: &str) -> Result<Value, ApiError> {
    let DeploymentSpec {
        replicas,
        selector,
        template,
        strategy,
        min_ready_seconds,
        revision_history_limit,
        paused,
        progress_deadline_seconds,
    } = s;
    // `selector` is a pointer without omitempty: Go writes null when it is unset.
    let selector = match selector {
        Some(s) => label_selector(s, &child(path, "selector"))?,
        None => Value::Null,
    };
    Ok(Fields::new()
        .pointer("replicas", replicas)
        .value("selector", selector)
        .value(
            "template",
            pod_template_spec(template, &child(path, "template"))?,
        )
        .value(
            "strategy",
            deployment_strategy(strategy.unwrap_or_default(), &child(path, "strategy"))?,
        )
        .omitempty("minReadySeconds", min_ready_seconds)
        .pointer("revisionHistoryLimit", revision_history_limit)
        .omitempty("paused", paused)
        .pointer("progressDeadlineSeconds", progress_deadline_seconds)
        .finish())
}

fn deployment_strategy(s: DeploymentStrategy, path: &str) -> Result<Value, ApiError> {
    let DeploymentStrategy {
        r#type,
        rolling_update,
    } = s;
    let rolling_update = rolling_update
        .map(|r| {
            let RollingUpdateDeployment {
                max_unavailable,
                max_surge,
            } = r;
            let ru = child(path, "rollingUpdate");
            let max_unavailable = max_unavailable
                .map(|v| int_or_string(Some(v), &child(&ru, "maxUnavailable")))
                .transpose()?;
            let max_surge = max_surge
                .map(|v| int_or_string(Some(v), &child(&ru, "maxSurge")))
                .transpose()?;
            Ok::<_, ApiError>(
                Fields::new()
                    .opt_value("maxUnavailable", max_unavailable)
                    .opt_value("maxSurge", max_surge)
                    .finish(),
            )
        })
        .transpose()?;
    Ok(Fields::new()
        .omitempty("type", r#type)
        .opt_value("rollingUpdate", rolling_update)
        .finish())
}

fn deployment_status(s: DeploymentStatus, path: &str) -> Result<Value, ApiError> {
    let DeploymentStatus {
        observed_generation,
        replicas,
        updated_replicas,
        ready_replicas,
        available_replicas,
        unavailable_replicas,
        terminating_replicas,
        conditions,
        collision_count,
    } = s;
    reject(path, "conditions", !conditions.is_empty())?;
    Ok(Fields::new()
        .omitempty("observedGeneration", observed_generation)
        .omitempty("replicas", replicas)
        .omitempty("updatedReplicas", updated_replicas)
        .omitempty("readyReplicas", ready_replicas)
        .omitempty("availableReplicas", available_replicas)
        .omitempty("unavailableReplicas", unavailable_replicas)
        .pointer("terminatingReplicas", terminating_replicas)
        .pointer("collisionCount", collision_count)
        .finish())
}

pub(super) fn job(j: Job, f: &mut Fields) -> Result<(), ApiError> {
    let Job {
        metadata,
        spec,
        status,
    } = j;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value("spec", job_spec(spec.unwrap_or_default(), "spec")?)
        .value("status", job_status(status.unwrap_or_default(), "status")?);
    Ok(())
}

fn job_spec(s: JobSpec, path: &str) -> Result<Value, ApiError> {
    let JobSpec {
        parallelism,
        completions,
        active_deadline_seconds,
        pod_failure_policy,
        success_policy,
        backoff_limit,
        backoff_limit_per_index,
        max_failed_indexes,
        selector,
        manual_selector,
        template,
        ttl_seconds_after_finished,
        completion_mode,
        suspend,
        pod_replacement_policy,
        managed_by,
    } = s;
    let pod_failure_policy = pod_failure_policy
        .map(|p| pod_failure_policy_json(p, &child(path, "podFailurePolicy")))
        .transpose()?;
    let success_policy = success_policy
        .map(|p| success_policy_json(p, &child(path, "successPolicy")))
        .transpose()?;
    let selector = selector
        .map(|s| label_selector(s, &child(path, "selector")))
        .transpose()?;
    Ok(Fields::new()
        .pointer("parallelism", parallelism)
        .pointer("completions", completions)
        .pointer("activeDeadlineSeconds", active_deadline_seconds)
        .opt_value("podFailurePolicy", pod_failure_policy)
        .opt_value("successPolicy", success_policy)
        .pointer("backoffLimit", backoff_limit)
        .pointer("backoffLimitPerIndex", backoff_limit_per_index)
        .pointer("maxFailedIndexes", max_failed_indexes)
        .opt_value("selector", selector)
        .pointer("manualSelector", manual_selector)
        .value(
            "template",
            pod_template_spec(template, &child(path, "template"))?,
        )
        .pointer("ttlSecondsAfterFinished", ttl_seconds_after_finished)
        .pointer("completionMode", completion_mode)
        .pointer("suspend", suspend)
        .pointer("podReplacementPolicy", pod_replacement_policy)
        .pointer("managedBy", managed_by)
        .finish())
}

fn pod_failure_policy_json(p: PodFailurePolicy, path: &str) -> Result<Value, ApiError> {
    let PodFailurePolicy { rules } = p;
    Ok(Fields::new()
        .list_always(path, "rules", rules, pod_failure_policy_rule)?
        .finish())
}

fn pod_failure_policy_rule(r: PodFailurePolicyRule, _path: &str) -> Result<Value, ApiError> {
    let PodFailurePolicyRule {
        action,
        on_exit_codes,
        on_pod_conditions,
    } = r;
    let on_exit_codes = on_exit_codes.map(|e| {
        let PodFailurePolicyOnExitCodesRequirement {
            container_name,
            operator,
            values,
        } = e;
        let values = if values.is_empty() {
            Value::Null
        } else {
            Value::from(values)
        };
        Fields::new()
            .pointer("containerName", container_name)
            .always("operator", operator)
            .value("values", values)
            .finish()
    });
    let on_pod_conditions: Vec<Value> = on_pod_conditions
        .into_iter()
        .map(|c| {
            let PodFailurePolicyOnPodConditionsPattern { r#type, status } = c;
            Fields::new()
                .always("type", r#type)
                .always("status", status)
                .finish()
        })
        .collect();
    let mut f = Fields::new();
    f.always("action", action)
        .opt_value("onExitCodes", on_exit_codes);
    if !on_pod_conditions.is_empty() {
        f.value("onPodConditions", Value::Array(on_pod_conditions));
    }
    Ok(f.finish())
}

fn success_policy_json(p: SuccessPolicy, path: &str) -> Result<Value, ApiError> {
    let SuccessPolicy { rules } = p;
    Ok(Fields::new()
        .list_always(path, "rules", rules, |r, _| {
            let SuccessPolicyRule {
                succeeded_indexes,
                succeeded_count,
            } = r;
            Ok(Fields::new()
                .pointer("succeededIndexes", succeeded_indexes)
                .pointer("succeededCount", succeeded_count)
                .finish())
        })?
        .finish())
}

fn job_status(s: JobStatus, path: &str) -> Result<Value, ApiError> {
    let JobStatus {
        conditions,
        start_time,
        completion_time,
        active,
        succeeded,
        failed,
        terminating,
        completed_indexes,
        failed_indexes,
        uncounted_terminated_pods,
        ready,
    } = s;
    reject(path, "conditions", !conditions.is_empty())?;
    reject(
        path,
        "uncountedTerminatedPods",
        uncounted_terminated_pods.is_some(),
    )?;
    Ok(Fields::new()
        .opt_value(
            "startTime",
            opt_time(start_time, &child(path, "startTime"))?,
        )
        .opt_value(
            "completionTime",
            opt_time(completion_time, &child(path, "completionTime"))?,
        )
        .omitempty("active", active)
        .omitempty("succeeded", succeeded)
        .omitempty("failed", failed)
        .pointer("terminating", terminating)
        .omitempty("completedIndexes", completed_indexes)
        .pointer("failedIndexes", failed_indexes)
        .pointer("ready", ready)
        .finish())
}

pub(super) fn cron_job(c: CronJob, f: &mut Fields) -> Result<(), ApiError> {
    let CronJob {
        metadata,
        spec,
        status,
    } = c;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value("spec", cron_job_spec(spec.unwrap_or_default(), "spec")?)
        .value(
            "status",
            cron_job_status(status.unwrap_or_default(), "status")?,
        );
    Ok(())
}

fn cron_job_spec(s: CronJobSpec, path: &str) -> Result<Value, ApiError> {
    let CronJobSpec {
        schedule,
        time_zone,
        starting_deadline_seconds,
        concurrency_policy,
        suspend,
        job_template,
        successful_jobs_history_limit,
        failed_jobs_history_limit,
    } = s;
    let JobTemplateSpec { metadata, spec } = job_template.unwrap_or_default();
    let template_path = child(path, "jobTemplate");
    let job_template = Fields::new()
        .value(
            "metadata",
            object_meta(metadata, &child(&template_path, "metadata"))?,
        )
        .value(
            "spec",
            job_spec(spec.unwrap_or_default(), &child(&template_path, "spec"))?,
        )
        .finish();
    Ok(Fields::new()
        .always("schedule", schedule)
        .pointer("timeZone", time_zone)
        .pointer("startingDeadlineSeconds", starting_deadline_seconds)
        .omitempty("concurrencyPolicy", concurrency_policy)
        .pointer("suspend", suspend)
        .value("jobTemplate", job_template)
        .pointer("successfulJobsHistoryLimit", successful_jobs_history_limit)
        .pointer("failedJobsHistoryLimit", failed_jobs_history_limit)
        .finish())
}

fn cron_job_status(s: CronJobStatus, path: &str) -> Result<Value, ApiError> {
    let CronJobStatus {
        active,
        last_schedule_time,
        last_successful_time,
    } = s;
    Ok(Fields::new()
        .list(path, "active", active, object_reference)?
        .opt_value(
            "lastScheduleTime",
            opt_time(last_schedule_time, &child(path, "lastScheduleTime"))?,
        )
        .opt_value(
            "lastSuccessfulTime",
            opt_time(last_successful_time, &child(path, "lastSuccessfulTime"))?,
        )
        .finish())
}

pub(super) fn horizontal_pod_autoscaler(
    h: HorizontalPodAutoscaler,
    f: &mut Fields,
) -> Result<(), ApiError> {
    let HorizontalPodAutoscaler {
        metadata,
        spec,
        status,
    } = h;
    let HorizontalPodAutoscalerSpec {
        scale_target_ref,
        min_replicas,
        max_replicas,
        target_cpu_utilization_percentage,
    } = spec.unwrap_or_default();
    let CrossVersionObjectReference {
        kind,
        name,
        api_version,
    } = scale_target_ref.unwrap_or_default();
    let HorizontalPodAutoscalerStatus {
        observed_generation,
        last_scale_time,
        current_replicas,
        desired_replicas,
        current_cpu_utilization_percentage,
    } = status.unwrap_or_default();
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value(
            "spec",
            Fields::new()
                .value(
                    "scaleTargetRef",
                    Fields::new()
                        .always("kind", kind)
                        .always("name", name)
                        .omitempty("apiVersion", api_version)
                        .finish(),
                )
                .pointer("minReplicas", min_replicas)
                .always("maxReplicas", max_replicas)
                .pointer(
                    "targetCPUUtilizationPercentage",
                    target_cpu_utilization_percentage,
                )
                .finish(),
        )
        .value(
            "status",
            Fields::new()
                .pointer("observedGeneration", observed_generation)
                .opt_value(
                    "lastScaleTime",
                    opt_time(last_scale_time, "status.lastScaleTime")?,
                )
                .always("currentReplicas", current_replicas)
                .always("desiredReplicas", desired_replicas)
                .pointer(
                    "currentCPUUtilizationPercentage",
                    current_cpu_utilization_percentage,
                )
                .finish(),
        );
    Ok(())
}

pub(super) fn pod_disruption_budget(
    p: PodDisruptionBudget,
    f: &mut Fields,
) -> Result<(), ApiError> {
    let PodDisruptionBudget {
        metadata,
        spec,
        status,
    } = p;
    let PodDisruptionBudgetSpec {
        min_available,
        selector,
        max_unavailable,
        unhealthy_pod_eviction_policy,
    } = spec.unwrap_or_default();
    let PodDisruptionBudgetStatus {
        observed_generation,
        disrupted_pods,
        disruptions_allowed,
        current_healthy,
        desired_healthy,
        expected_pods,
        conditions,
    } = status.unwrap_or_default();
    reject("status", "disruptedPods", !disrupted_pods.is_empty())?;
    reject("status", "conditions", !conditions.is_empty())?;
    let min_available = min_available
        .map(|v| int_or_string(Some(v), "spec.minAvailable"))
        .transpose()?;
    let selector = selector
        .map(|s| label_selector(s, "spec.selector"))
        .transpose()?;
    let max_unavailable = max_unavailable
        .map(|v| int_or_string(Some(v), "spec.maxUnavailable"))
        .transpose()?;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value(
            "spec",
            Fields::new()
                .opt_value("minAvailable", min_available)
                .opt_value("selector", selector)
                .opt_value("maxUnavailable", max_unavailable)
                .pointer("unhealthyPodEvictionPolicy", unhealthy_pod_eviction_policy)
                .finish(),
        )
        .value(
            "status",
            Fields::new()
                .omitempty("observedGeneration", observed_generation)
                .always("disruptionsAllowed", disruptions_allowed)
                .always("currentHealthy", current_healthy)
                .always("desiredHealthy", desired_healthy)
                .always("expectedPods", expected_pods)
                .finish(),
        );
    Ok(())
}

pub(super) fn priority_class(p: PriorityClass, f: &mut Fields) -> Result<(), ApiError> {
    let PriorityClass {
        metadata,
        value,
        global_default,
        description,
        preemption_policy,
    } = p;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .always("value", value)
        .omitempty("globalDefault", global_default)
        .omitempty("description", description)
        .pointer("preemptionPolicy", preemption_policy);
    Ok(())
}
