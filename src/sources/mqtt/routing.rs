//! Each device's route on its broker connection: its topic filter (the device's own,
//! else the profile's) and its payload decoder, built from its config and profile.

use super::route::Route;
use super::{Decoder, MqttError};
use crate::sources::DeviceSpec;
use tracing::warn;

pub(super) fn route_for(device: DeviceSpec) -> Result<Route, MqttError> {
    let profile = &device.profile;
    let fmt = profile
        .profile
        .mqtt
        .as_ref()
        .ok_or_else(|| MqttError::NoMqttSection {
            device: device.config.id.clone(),
            profile: profile.path.display().to_string(),
        })?;
    let filter = device
        .config
        .mqtt
        .as_ref()
        .and_then(|m| m.topic.clone())
        .unwrap_or_else(|| fmt.topic.clone());
    let decoder = Decoder::new(&device.config.id, fmt, |c| {
        profile
            .profile
            .channels
            .get(c)
            .map(|ch| (ch.sensor_type, ch.unit.clone()))
    })
    .map_err(|reason| MqttError::Profile {
        device: device.config.id.clone(),
        profile: profile.path.display().to_string(),
        reason,
    })?;
    // Level captures count levels of the topic itself; a device's own topic filter
    // must keep them where the profile's is.
    let levels: Vec<&str> = filter.split('/').collect();
    for (name, level) in [
        ("device_level", fmt.device_level),
        ("channel_level", fmt.channel_level),
    ] {
        let Some(level) = level else { continue };
        let wild = match levels.get(level) {
            Some(l) => *l == "+" || *l == "#",
            None => levels.last() == Some(&"#"),
        };
        if !wild {
            warn!(
                device = %device.config.id,
                topic = %filter,
                "mqtt.{name} = {level} of profile {} is not a wildcard level of this device's topic filter; a device topic must keep the profile's levels in place",
                profile.path.display()
            );
        }
    }
    Ok(Route {
        filter,
        device,
        decoder,
    })
}
