//! Conversion of pod volumes: the in-cluster and node-local sources are converted, the legacy
//! in-tree cloud and storage-system sources are refused with their field path.

use k8s_pb::api::core::v1::{
    CSIVolumeSource, ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection,
    DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource,
    ImageVolumeSource, KeyToPath, NfsVolumeSource, PersistentVolumeClaimVolumeSource,
    ProjectedVolumeSource, SecretProjection, SecretVolumeSource, ServiceAccountTokenProjection,
    Volume, VolumeProjection, VolumeSource,
};
use serde_json::Value;

use super::container::{object_field_selector, resource_field_selector};
use super::core::inline_name;
use super::json::{Fields, child, reject};
use super::meta::quantity;
use crate::error::ApiError;

pub(super) fn volume(v: Volume, path: &str) -> Result<Value, ApiError> {
    let Volume {
        name,
        volume_source,
    } = v;
    let VolumeSource {
        host_path,
        empty_dir,
        gce_persistent_disk,
        aws_elastic_block_store,
        git_repo,
        secret,
        nfs,
        iscsi,
        glusterfs,
        persistent_volume_claim,
        rbd,
        flex_volume,
        cinder,
        cephfs,
        flocker,
        downward_api,
        fc,
        azure_file,
        config_map,
        vsphere_volume,
        quobyte,
        azure_disk,
        photon_persistent_disk,
        projected,
        portworx_volume,
        scale_io,
        storageos,
        csi,
        ephemeral,
        image,
    } = volume_source.unwrap_or_default();
    // Sources skiff's node agent cannot provide anyway, or that need a schema this decoder
    // does not carry; a JSON body can still name them.
    reject(path, "gcePersistentDisk", gce_persistent_disk.is_some())?;
    reject(
        path,
        "awsElasticBlockStore",
        aws_elastic_block_store.is_some(),
    )?;
    reject(path, "gitRepo", git_repo.is_some())?;
    reject(path, "iscsi", iscsi.is_some())?;
    reject(path, "glusterfs", glusterfs.is_some())?;
    reject(path, "rbd", rbd.is_some())?;
    reject(path, "flexVolume", flex_volume.is_some())?;
    reject(path, "cinder", cinder.is_some())?;
    reject(path, "cephfs", cephfs.is_some())?;
    reject(path, "flocker", flocker.is_some())?;
    reject(path, "fc", fc.is_some())?;
    reject(path, "azureFile", azure_file.is_some())?;
    reject(path, "vsphereVolume", vsphere_volume.is_some())?;
    reject(path, "quobyte", quobyte.is_some())?;
    reject(path, "azureDisk", azure_disk.is_some())?;
    reject(
        path,
        "photonPersistentDisk",
        photon_persistent_disk.is_some(),
    )?;
    reject(path, "portworxVolume", portworx_volume.is_some())?;
    reject(path, "scaleIO", scale_io.is_some())?;
    reject(path, "storageos", storageos.is_some())?;
    reject(path, "ephemeral", ephemeral.is_some())?;

    let host_path = host_path.map(|h| {
        let HostPathVolumeSource { path, r#type } = h;
        Fields::new()
            .always("path", path)
            .pointer("type", r#type)
            .finish()
    });
    let empty_dir = empty_dir
        .map(|e| {
            let EmptyDirVolumeSource { medium, size_limit } = e;
            let size_limit = size_limit
                .map(|q| quantity(q, &child(path, "emptyDir.sizeLimit")))
                .transpose()?;
            Ok::<_, ApiError>(
                Fields::new()
                    .omitempty("medium", medium)
                    .opt_value("sizeLimit", size_limit)
                    .finish(),
            )
        })
        .transpose()?;
    let secret = secret
        .map(|s| {
            let SecretVolumeSource {
                secret_name,
                items,
                default_mode,
                optional,
            } = s;
            Ok::<_, ApiError>(
                Fields::new()
                    .omitempty("secretName", secret_name)
                    .list(&child(path, "secret"), "items", items, key_to_path)?
                    .pointer("defaultMode", default_mode)
                    .pointer("optional", optional)
                    .finish(),
            )
        })
        .transpose()?;
    let nfs = nfs.map(|n| {
        let NfsVolumeSource {
            server,
            path,
            read_only,
        } = n;
        Fields::new()
            .always("server", server)
            .always("path", path)
            .omitempty("readOnly", read_only)
            .finish()
    });
    let persistent_volume_claim = persistent_volume_claim.map(|p| {
        let PersistentVolumeClaimVolumeSource {
            claim_name,
            read_only,
        } = p;
        Fields::new()
            .always("claimName", claim_name)
            .omitempty("readOnly", read_only)
            .finish()
    });
    let downward_api = downward_api
        .map(|d| {
            let DownwardAPIVolumeSource {
                items,
                default_mode,
            } = d;
            Ok::<_, ApiError>(
                Fields::new()
                    .list(
                        &child(path, "downwardAPI"),
                        "items",
                        items,
                        downward_api_file,
                    )?
                    .pointer("defaultMode", default_mode)
                    .finish(),
            )
        })
        .transpose()?;
    let config_map = config_map
        .map(|c| {
            let ConfigMapVolumeSource {
                local_object_reference,
                items,
                default_mode,
                optional,
            } = c;
            Ok::<_, ApiError>(
                Fields::new()
                    .omitempty("name", inline_name(local_object_reference))
                    .list(&child(path, "configMap"), "items", items, key_to_path)?
                    .pointer("defaultMode", default_mode)
                    .pointer("optional", optional)
                    .finish(),
            )
        })
        .transpose()?;
    let projected = projected
        .map(|p| {
            let ProjectedVolumeSource {
                sources,
                default_mode,
            } = p;
            Ok::<_, ApiError>(
                Fields::new()
                    .list_always(
                        &child(path, "projected"),
                        "sources",
                        sources,
                        volume_projection,
                    )?
                    .pointer("defaultMode", default_mode)
                    .finish(),
            )
        })
        .transpose()?;
    let csi = csi.map(|c| {
        let CSIVolumeSource {
            driver,
            read_only,
            fs_type,
            volume_attributes,
            node_publish_secret_ref,
        } = c;
        let secret_ref = node_publish_secret_ref.map(|r| {
            Fields::new()
                .omitempty("name", inline_name(Some(r)))
                .finish()
        });
        Fields::new()
            .always("driver", driver)
            .pointer("readOnly", read_only)
            .pointer("fsType", fs_type)
            .string_map("volumeAttributes", volume_attributes)
            .opt_value("nodePublishSecretRef", secret_ref)
            .finish()
    });
    let image = image.map(|i| {
        let ImageVolumeSource {
            reference,
            pull_policy,
        } = i;
        Fields::new()
            .omitempty("reference", reference)
            .omitempty("pullPolicy", pull_policy)
            .finish()
    });
    // VolumeSource is embedded inline in Go: the source sits next to `name`.
    Ok(Fields::new()
        .always("name", name)
        .opt_value("hostPath", host_path)
        .opt_value("emptyDir", empty_dir)
        .opt_value("secret", secret)
        .opt_value("nfs", nfs)
        .opt_value("persistentVolumeClaim", persistent_volume_claim)
        .opt_value("downwardAPI", downward_api)
        .opt_value("configMap", config_map)
        .opt_value("projected", projected)
        .opt_value("csi", csi)
        .opt_value("image", image)
        .finish())
}

fn key_to_path(k: KeyToPath, _path: &str) -> Result<Value, ApiError> {
    let KeyToPath { key, path, mode } = k;
    Ok(Fields::new()
        .always("key", key)
        .always("path", path)
        .pointer("mode", mode)
        .finish())
}

fn downward_api_file(d: DownwardAPIVolumeFile, path: &str) -> Result<Value, ApiError> {
    let DownwardAPIVolumeFile {
        path: file_path,
        field_ref,
        resource_field_ref,
        mode,
    } = d;
    let resource_field_ref = resource_field_ref
        .map(|r| resource_field_selector(r, &child(path, "resourceFieldRef")))
        .transpose()?;
    Ok(Fields::new()
        .always("path", file_path)
        .opt_value("fieldRef", field_ref.map(object_field_selector))
        .opt_value("resourceFieldRef", resource_field_ref)
        .pointer("mode", mode)
        .finish())
}

fn volume_projection(p: VolumeProjection, path: &str) -> Result<Value, ApiError> {
    let VolumeProjection {
        secret,
        downward_api,
        config_map,
        service_account_token,
        cluster_trust_bundle,
        pod_certificate,
    } = p;
    reject(path, "clusterTrustBundle", cluster_trust_bundle.is_some())?;
    reject(path, "podCertificate", pod_certificate.is_some())?;
    let secret = secret
        .map(|s| {
            let SecretProjection {
                local_object_reference,
                items,
                optional,
            } = s;
            Ok::<_, ApiError>(
                Fields::new()
                    .omitempty("name", inline_name(local_object_reference))
                    .list(&child(path, "secret"), "items", items, key_to_path)?
                    .pointer("optional", optional)
                    .finish(),
            )
        })
        .transpose()?;
    let downward_api = downward_api
        .map(|d| {
            let DownwardAPIProjection { items } = d;
            Ok::<_, ApiError>(
                Fields::new()
                    .list(
                        &child(path, "downwardAPI"),
                        "items",
                        items,
                        downward_api_file,
                    )?
                    .finish(),
            )
        })
        .transpose()?;
    let config_map = config_map
        .map(|c| {
            let ConfigMapProjection {
                local_object_reference,
                items,
                optional,
            } = c;
            Ok::<_, ApiError>(
                Fields::new()
                    .omitempty("name", inline_name(local_object_reference))
                    .list(&child(path, "configMap"), "items", items, key_to_path)?
                    .pointer("optional", optional)
                    .finish(),
            )
        })
        .transpose()?;
    let service_account_token = service_account_token.map(|t| {
        let ServiceAccountTokenProjection {
            audience,
            expiration_seconds,
            path,
        } = t;
        Fields::new()
            .omitempty("audience", audience)
            .pointer("expirationSeconds", expiration_seconds)
            .always("path", path)
            .finish()
    });
    Ok(Fields::new()
        .opt_value("secret", secret)
        .opt_value("downwardAPI", downward_api)
        .opt_value("configMap", config_map)
        .opt_value("serviceAccountToken", service_account_token)
        .finish())
}
