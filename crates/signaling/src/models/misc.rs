//! `audioRoutingGroup`, `contentSharingSession` and `teleconferenceDeviceQuality`.

use super::{Extra, RoutingMode};
use serde::{Deserialize, Serialize};

/// `audioRoutingGroup`: which participants hear which sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AudioRoutingGroup {
    /// `@odata.type` as received.
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Receiving participant ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receivers: Option<Vec<String>>,
    /// Routing mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_mode: Option<RoutingMode>,
    /// Source participant ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `contentSharingSession`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContentSharingSession {
    /// `@odata.type` as received.
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `teleconferenceDeviceMediaQuality` and its audio/video/screen-sharing subtypes (one open
/// struct; `odata_type` names the subtype, video-only fields are optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TeleconferenceDeviceMediaQuality {
    /// Subtype, e.g. `#microsoft.graph.teleconferenceDeviceAudioQuality`.
    #[serde(rename = "@odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// Average inbound jitter (ISO 8601 duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_inbound_jitter: Option<String>,
    /// Average inbound packet loss rate (%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_inbound_packet_loss_rate_in_percentage: Option<f64>,
    /// Average inbound round trip delay (ISO 8601 duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_inbound_round_trip_delay: Option<String>,
    /// Average outbound jitter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_outbound_jitter: Option<String>,
    /// Average outbound packet loss rate (%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_outbound_packet_loss_rate_in_percentage: Option<f64>,
    /// Average outbound round trip delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_outbound_round_trip_delay: Option<String>,
    /// Channel index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_index: Option<i32>,
    /// Inbound packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_packets: Option<i64>,
    /// Local IP address.
    #[serde(rename = "localIPAddress", skip_serializing_if = "Option::is_none")]
    pub local_ip_address: Option<String>,
    /// Local port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<i32>,
    /// Maximum inbound jitter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_inbound_jitter: Option<String>,
    /// Maximum inbound packet loss rate (%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_inbound_packet_loss_rate_in_percentage: Option<f64>,
    /// Maximum inbound round trip delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_inbound_round_trip_delay: Option<String>,
    /// Maximum outbound jitter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_outbound_jitter: Option<String>,
    /// Maximum outbound packet loss rate (%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_outbound_packet_loss_rate_in_percentage: Option<f64>,
    /// Maximum outbound round trip delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_outbound_round_trip_delay: Option<String>,
    /// Media duration (ISO 8601 duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_duration: Option<String>,
    /// Network link speed (bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_link_speed_in_bytes: Option<i64>,
    /// Outbound packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_packets: Option<i64>,
    /// Remote IP address.
    #[serde(rename = "remoteIPAddress", skip_serializing_if = "Option::is_none")]
    pub remote_ip_address: Option<String>,
    /// Remote port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<i32>,
    /// Unknown properties (video bit rate / frame rate fields, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `teleconferenceDeviceQuality`: quality data a device reports for a call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TeleconferenceDeviceQuality {
    /// Call chain id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_chain_id: Option<String>,
    /// Cloud service deployment environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_service_deployment_environment: Option<String>,
    /// Cloud service deployment id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_service_deployment_id: Option<String>,
    /// Cloud service instance name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_service_instance_name: Option<String>,
    /// Cloud service name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_service_name: Option<String>,
    /// Device description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_description: Option<String>,
    /// Device name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Media leg id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_leg_id: Option<String>,
    /// Per-media quality.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_quality_list: Option<Vec<TeleconferenceDeviceMediaQuality>>,
    /// Participant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    /// Unknown properties.
    #[serde(flatten)]
    pub extra: Extra,
}
