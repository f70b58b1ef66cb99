use super::*;

#[test]
fn model_metrics_follow_a_swap_by_the_s3_index() {
    let base = crate::inference::ModelRegistry::with_defaults().expect("defaults");
    let absolute = base
        .bundles()
        .iter()
        .find(|b| b.manifest().name == "vibration-default")
        .expect("shipped")
        .clone();
    let live = Live::new(crate::inference::shared(base.clone()));
    let render = |live: &Live| {
        let mut e = Exposition::new();
        models(live, &mut e);
        e.finish()
    };
    let before = render(&live);
    assert!(before.contains("edgegw_model_active{sensor_type=\"vibration\",kind=\"window\",name=\"vibration-relative\""), "{before}");
    // S3 sync swaps in a registry whose index names another bundle for vibration.
    let mut assigned = std::collections::BTreeMap::new();
    assigned.insert(crate::record::SensorType::Vibration, absolute);
    live.registry.store(std::sync::Arc::new(
        base.with_assignments(assigned, Default::default()),
    ));
    let after = render(&live);
    assert!(after.contains("role=\"index:vibration\""), "{after}");
    assert!(after.contains("edgegw_model_active{sensor_type=\"vibration\",kind=\"window\",name=\"vibration-default\""), "{after}");
}
