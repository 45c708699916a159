//! Tests of protobuf decoding against bodies captured from kubectl 1.32 and hand-built messages.

use super::*;

/// Bodies captured from `kubectl create ...` / `kubectl run ...` (1.32) next to the JSON that
/// `--dry-run=client -o json` printed for the same command.
const FIXTURES: &[(&str, &[u8], &str)] = &[
    ("cm_env", include_bytes!("testdata/cm_env.pb"), include_str!("testdata/cm_env.json")),
    ("cm_file", include_bytes!("testdata/cm_file.pb"), include_str!("testdata/cm_file.json")),
    ("cm_literal", include_bytes!("testdata/cm_literal.pb"), include_str!("testdata/cm_literal.json")),
    ("cronjob", include_bytes!("testdata/cronjob.pb"), include_str!("testdata/cronjob.json")),
    ("cronjob_cmd", include_bytes!("testdata/cronjob_cmd.pb"), include_str!("testdata/cronjob_cmd.json")),
    ("deploy", include_bytes!("testdata/deploy.pb"), include_str!("testdata/deploy.json")),
    ("deploy_cmd", include_bytes!("testdata/deploy_cmd.pb"), include_str!("testdata/deploy_cmd.json")),
    ("deploy_multi", include_bytes!("testdata/deploy_multi.pb"), include_str!("testdata/deploy_multi.json")),
    ("job", include_bytes!("testdata/job.pb"), include_str!("testdata/job.json")),
    ("job_cmd", include_bytes!("testdata/job_cmd.pb"), include_str!("testdata/job_cmd.json")),
    ("job_from", include_bytes!("testdata/job_from.pb"), include_str!("testdata/job_from.json")),
    ("namespace", include_bytes!("testdata/namespace.pb"), include_str!("testdata/namespace.json")),
    ("sa", include_bytes!("testdata/sa.pb"), include_str!("testdata/sa.json")),
    ("secret_docker", include_bytes!("testdata/secret_docker.pb"), include_str!("testdata/secret_docker.json")),
    ("secret_generic", include_bytes!("testdata/secret_generic.pb"), include_str!("testdata/secret_generic.json")),
    ("secret_tls", include_bytes!("testdata/secret_tls.pb"), include_str!("testdata/secret_tls.json")),
    ("svc_clusterip", include_bytes!("testdata/svc_clusterip.pb"), include_str!("testdata/svc_clusterip.json")),
    ("svc_ext", include_bytes!("testdata/svc_ext.pb"), include_str!("testdata/svc_ext.json")),
    ("svc_headless", include_bytes!("testdata/svc_headless.pb"), include_str!("testdata/svc_headless.json")),
    ("svc_lb", include_bytes!("testdata/svc_lb.pb"), include_str!("testdata/svc_lb.json")),
    ("svc_nodeport", include_bytes!("testdata/svc_nodeport.pb"), include_str!("testdata/svc_nodeport.json")),
    ("svc_nodeport2", include_bytes!("testdata/svc_nodeport2.pb"), include_str!("testdata/svc_nodeport2.json")),
];

#[test]
fn kubectl_bodies_decode_to_kubectl_json() {
    for (name, pb, json) in FIXTURES {
        let got = decode(pb).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
        assert_eq!(serde_json::to_string(&got).ok().as_deref(), Some(json.trim()), "{name}: field order");
    }
}
