//! ISO 20816-3 evaluation zones of broadband vibration velocity.
//!
//! Owns the zone boundary table (velocity r.m.s. in mm/s, 10–1000 Hz, measured on the
//! bearing housings of industrial machines above 15 kW), the mapping from a velocity to
//! a [`Zone`] and what each zone means for an alert.
//!
//! Pure functions only. This module must not compute the velocity (integrating
//! acceleration and band-limiting it to 10–1000 Hz is the processor's job), read
//! config or raise alerts; it also does not decide which group and foundation a machine
//! has: the operator states them in config.
//!
//! The values are those of ISO 10816-3:2009, Annex A, Tables A.1 and A.2, which
//! ISO 20816-3 (its successor) retained. They are the standard's defaults for machines
//! without a history; a site with long experience of a machine may set its own limits.

use serde::{Deserialize, Serialize};

/// Machine group of ISO 20816-3, by size: it selects the zone boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineGroup {
    /// Large machines: rated power above 300 kW, or electrical machines with a shaft
    /// height of 315 mm or more.
    Group1,
    /// Medium-sized machines: rated power above 15 kW up to 300 kW, or electrical
    /// machines with a shaft height from 160 mm up to 315 mm.
    Group2,
}

impl MachineGroup {
    /// The group by its number in the standard (1 or 2); `None` for any other number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(MachineGroup::Group1),
            2 => Some(MachineGroup::Group2),
            _ => None,
        }
    }

    /// The group's number in the standard.
    pub fn number(self) -> u8 {
        match self {
            MachineGroup::Group1 => 1,
            MachineGroup::Group2 => 2,
        }
    }
}

/// Support of the machine in the measurement direction, as ISO 20816-3 classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Foundation {
    /// The lowest natural frequency of machine and support is at least 25 % above the
    /// main excitation frequency (usually the rotational frequency).
    Rigid,
    /// Every other support. A flexible foundation lets the housing move more for the
    /// same forces, which is why its boundaries are higher.
    Flexible,
}

/// Evaluation zone of ISO 20816-3. Serialized as its letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Zone {
    /// Newly commissioned machines normally fall within this zone.
    A,
    /// Acceptable for unrestricted long-term operation.
    B,
    /// Not suitable for long-term continuous operation; the machine may run for a limited
    /// period until a suitable opportunity for remedial action.
    C,
    /// Severe enough to cause damage to the machine.
    D,
}

impl Zone {
    /// The zone's letter.
    pub fn as_str(self) -> &'static str {
        match self {
            Zone::A => "A",
            Zone::B => "B",
            Zone::C => "C",
            Zone::D => "D",
        }
    }

    /// What the standard says about machines in this zone, for alert text.
    pub fn meaning(self) -> &'static str {
        match self {
            Zone::A => {
                "vibration of newly commissioned machines; acceptable for unrestricted \
                 long-term operation"
            }
            Zone::B => "acceptable for unrestricted long-term operation",
            Zone::C => {
                "not suitable for long-term continuous operation; may run for a limited \
                 period until remedial action"
            }
            Zone::D => "severe enough to cause damage to the machine",
        }
    }

    /// Alert severity on the 1..=5 scale of the upstream schema: `None` for A and B,
    /// which are acceptable for unrestricted long-term operation and need no alert; 3 for
    /// C, which calls for planned action; 5 for D, which calls for action now.
    pub fn severity(self) -> Option<u8> {
        match self {
            Zone::A | Zone::B => None,
            Zone::C => Some(3),
            Zone::D => Some(5),
        }
    }
}

/// Zone boundaries A/B, B/C and C/D in mm/s r.m.s. (10–1000 Hz) from ISO 10816-3:2009,
/// Annex A, Table A.1 (group 1) and Table A.2 (group 2).
pub fn boundaries(group: MachineGroup, foundation: Foundation) -> [f64; 3] {
    match (group, foundation) {
        (MachineGroup::Group1, Foundation::Rigid) => [2.3, 4.5, 7.1],
        (MachineGroup::Group1, Foundation::Flexible) => [3.5, 7.1, 11.0],
        (MachineGroup::Group2, Foundation::Rigid) => [1.4, 2.8, 4.5],
        (MachineGroup::Group2, Foundation::Flexible) => [2.3, 4.5, 7.1],
    }
}

/// The zone of a broadband velocity r.m.s. (mm/s, 10–1000 Hz).
///
/// A value exactly on a boundary belongs to the upper zone: the standard gives the
/// boundaries to two significant figures and does not say on which side they fall, and
/// for monitoring the conservative side is the one that raises the alert (4.5 mm/s on a
/// group 1 rigid machine is C). A negative value or NaN is not a measurement and yields
/// A, so that missing data never raises a vibration-severity alert; the validation stage
/// flags such readings.
pub fn zone(velocity_mm_s: f64, group: MachineGroup, foundation: Foundation) -> Zone {
    let [ab, bc, cd] = boundaries(group, foundation);
    if velocity_mm_s >= cd {
        Zone::D
    } else if velocity_mm_s >= bc {
        Zone::C
    } else if velocity_mm_s >= ab {
        Zone::B
    } else {
        Zone::A
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELLS: [(MachineGroup, Foundation, [f64; 3]); 4] = [
        (MachineGroup::Group1, Foundation::Rigid, [2.3, 4.5, 7.1]),
        (MachineGroup::Group1, Foundation::Flexible, [3.5, 7.1, 11.0]),
        (MachineGroup::Group2, Foundation::Rigid, [1.4, 2.8, 4.5]),
        (MachineGroup::Group2, Foundation::Flexible, [2.3, 4.5, 7.1]),
    ];

    #[test]
    fn every_table_cell() {
        for (g, f, expected) in CELLS {
            assert_eq!(boundaries(g, f), expected, "{g:?} {f:?}");
        }
    }

    #[test]
    fn zones_around_every_boundary() {
        for (g, f, [ab, bc, cd]) in CELLS {
            let cases = [
                (0.0, Zone::A),
                (ab - 0.01, Zone::A),
                (ab, Zone::B),
                (bc - 0.01, Zone::B),
                (bc, Zone::C),
                (cd - 0.01, Zone::C),
                (cd, Zone::D),
                (cd * 10.0, Zone::D),
                (f64::INFINITY, Zone::D),
            ];
            for (v, expected) in cases {
                assert_eq!(zone(v, g, f), expected, "{v} mm/s, {g:?} {f:?}");
            }
        }
    }

    #[test]
    fn not_a_measurement_is_zone_a() {
        for v in [f64::NAN, -1.0, f64::NEG_INFINITY] {
            assert_eq!(zone(v, MachineGroup::Group2, Foundation::Rigid), Zone::A);
        }
    }

    #[test]
    fn groups_by_number() {
        assert_eq!(MachineGroup::from_number(1), Some(MachineGroup::Group1));
        assert_eq!(MachineGroup::from_number(2), Some(MachineGroup::Group2));
        for n in [0, 3, 4, 255] {
            assert_eq!(MachineGroup::from_number(n), None);
        }
        for g in [MachineGroup::Group1, MachineGroup::Group2] {
            assert_eq!(MachineGroup::from_number(g.number()), Some(g));
        }
    }

    #[test]
    fn zone_severity_and_words() {
        assert_eq!(Zone::A.severity(), None);
        assert_eq!(Zone::B.severity(), None);
        assert_eq!(Zone::C.severity(), Some(3));
        assert_eq!(Zone::D.severity(), Some(5));
        assert!(Zone::B
            .meaning()
            .contains("unrestricted long-term operation"));
        assert!(Zone::C
            .meaning()
            .contains("not suitable for long-term continuous operation"));
        assert!(Zone::D.meaning().contains("severe enough to cause damage"));
        assert!(Zone::A < Zone::B && Zone::C < Zone::D);
    }

    #[test]
    fn serde_forms() {
        for z in [Zone::A, Zone::B, Zone::C, Zone::D] {
            let json = serde_json::to_string(&z).expect("serialize");
            assert_eq!(json, format!("\"{}\"", z.as_str()));
        }
        #[derive(Deserialize)]
        struct Machine {
            foundation: Foundation,
        }
        let m: Machine = toml::from_str("foundation = \"flexible\"").expect("lowercase");
        assert_eq!(m.foundation, Foundation::Flexible);
        assert!(toml::from_str::<Machine>("foundation = \"Rigid\"").is_err());
    }
}
