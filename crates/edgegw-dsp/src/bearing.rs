//! Rolling-bearing defect frequencies and which bearing component an envelope spectrum
//! points at.
//!
//! Owns the kinematics (a [`BearingGeometry`] gives [`DefectMultipliers`], multiples of
//! the shaft frequency), the small table of catalogue bearings whose geometry has a
//! published source ([`DESIGNATIONS`]), the per-family line levels of one envelope
//! spectrum ([`family_levels`]) and the decision which component they implicate
//! ([`diagnose`]).
//!
//! Everything here is a pure function of its arguments. This module must not compute
//! spectra, read config, keep baselines or raise alerts: the processor demodulates the
//! waveform and owns the per-channel baseline, config validation calls
//! [`BearingGeometry::check`], and whoever holds a [`Diagnosis`] decides whether it
//! becomes an alert.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Millimetres per inch, exact by definition; the CWRU geometry is published in inches.
const MM_PER_INCH: f64 = 25.4;

/// Harmonics of each defect frequency that count towards a family level. A localised
/// defect gives a train of short impacts, so its envelope spectrum has a comb of
/// harmonics; three of them separate a real defect from one unrelated line that happens
/// to sit near the fundamental, yet stay below the band where the combs of different
/// families start to overlap at typical speeds.
pub const HARMONICS: u32 = 3;

/// Relative uncertainty of the defect frequencies (±1 %). The formulas assume pure
/// rolling; real bearings slip by 1–2 %, and the shaft speed a gateway knows (nameplate
/// or a tacho reading) is itself off by about that much, so each line is searched over
/// this band rather than at one bin.
pub const SPEED_TOLERANCE: f64 = 0.01;

/// Lowest frequency of the noise-floor estimate. Bins below it hold the remnant of the
/// envelope mean and the slow load variations, which would drag the median down.
pub const NOISE_FLOOR_FROM_HZ: f64 = 5.0;

/// The noise floor spans up to this multiple of the highest harmonic used: wide enough
/// that the median is over many bins and the defect lines themselves are a small minority
/// of them, narrow enough that the falling high-frequency tail does not pull it down.
pub const NOISE_FLOOR_SPAN: f64 = 1.2;

/// A family must stand at least this many times above its reference before it is named.
/// Healthy envelope spectra of the CWRU holdout vary by about ±30 % per family between
/// 8-window averages; 1.5 stays clear of that while the smallest CWRU seeded faults
/// (0.007 in) sit at 2–20x.
pub const MIN_RATIO: f64 = 1.5;

/// The named family must also exceed the runner-up by this factor. Families share
/// harmonics (3×FTF is near BSF on many bearings, a strong BPFI has shaft-rate sidebands
/// near other lines), so a close second means the spectrum does not say which one it is.
pub const MIN_MARGIN: f64 = 1.25;

/// Reference level without a baseline: twice the noise floor. A family level is a mean
/// ratio to the median bin, and the maximum over a ±1 % search band of pure noise is
/// typically 1.2–1.6 times the median, so twice the floor is "some line is there".
pub const NO_BASELINE_REFERENCE: f64 = 2.0;

/// Geometry of a rolling bearing, enough to compute its defect frequencies.
///
/// Users give it in config for any bearing that [`designation`] does not know. Call
/// [`BearingGeometry::check`] before [`BearingGeometry::multipliers`]: the formulas give
/// meaningless (even negative) frequencies for an impossible geometry.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearingGeometry {
    /// Number of rolling elements; the race defect frequencies scale with it.
    pub balls: u32,
    /// Rolling element diameter d in mm.
    pub ball_diameter_mm: f64,
    /// Pitch diameter D in mm (the circle through the ball centres), not the bore or the
    /// outside diameter: the kinematics depend on d/D.
    pub pitch_diameter_mm: f64,
    /// Contact angle in degrees; 0 for deep-groove ball bearings under radial load, which
    /// is why it defaults to 0. Angular-contact bearings state it in the catalogue.
    #[serde(default)]
    pub contact_angle_deg: f64,
}

impl BearingGeometry {
    /// Checks that the geometry is physically possible; the error lists every problem and
    /// says what is valid.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.balls < 3 {
            problems.push(format!("balls must be at least 3 (got {})", self.balls));
        }
        let (d, pitch) = (self.ball_diameter_mm, self.pitch_diameter_mm);
        if !(d.is_finite() && pitch.is_finite() && d > 0.0 && d < pitch) {
            problems.push(format!(
                "ball_diameter_mm must be greater than 0 and less than pitch_diameter_mm \
                 (got ball_diameter_mm = {d}, pitch_diameter_mm = {pitch})"
            ));
        }
        let angle = self.contact_angle_deg;
        if !(angle.is_finite() && (0.0..90.0).contains(&angle)) {
            problems.push(format!(
                "contact_angle_deg must be at least 0 and less than 90 (got {angle})"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The defect frequencies as multiples of the shaft frequency (inner ring rotating,
    /// outer ring fixed, pure rolling).
    pub fn multipliers(&self) -> DefectMultipliers {
        let n = f64::from(self.balls);
        let ratio = self.ball_diameter_mm / self.pitch_diameter_mm;
        let r = ratio * self.contact_angle_deg.to_radians().cos();
        DefectMultipliers {
            ftf: 0.5 * (1.0 - r),
            bpfo: n / 2.0 * (1.0 - r),
            bpfi: n / 2.0 * (1.0 + r),
            bsf: 1.0 / (2.0 * ratio) * (1.0 - r * r),
        }
    }
}

/// Bearing defect frequencies as multiples of the shaft frequency, so one set serves any
/// speed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DefectMultipliers {
    /// Fundamental train (cage) frequency: cage revolutions per shaft revolution.
    pub ftf: f64,
    /// Ball pass frequency, outer race: impacts per revolution of a defect on the fixed
    /// outer race.
    pub bpfo: f64,
    /// Ball pass frequency, inner race: impacts per revolution of a defect on the
    /// rotating inner race.
    pub bpfi: f64,
    /// Ball spin frequency (classic definition): revolutions of a ball about its own axis
    /// per shaft revolution.
    pub bsf: f64,
}

impl DefectMultipliers {
    /// Ball defect frequency, twice the ball spin frequency: a defect on a ball strikes
    /// both races once per spin. This is the "rolling element" frequency the CWRU
    /// Bearing Data Center publishes.
    pub fn ball_defect(&self) -> f64 {
        2.0 * self.bsf
    }
}

/// A catalogue bearing whose geometry has a published source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Designation {
    /// Base designation without seal or clearance suffixes, e.g. "6205".
    pub name: &'static str,
    /// The published geometry, converted to mm.
    pub geometry: BearingGeometry,
    /// Where the geometry comes from, so an operator can check it.
    pub source: &'static str,
}

/// Bearings known by designation. Only entries whose internal geometry (ball count and
/// diameter, pitch diameter) is published with a source belong here: catalogues give
/// bore and outside diameter, not the pitch diameter, and a guessed geometry would give
/// defect frequencies that look exact and are not. Any other bearing is given by its
/// geometry.
pub const DESIGNATIONS: &[Designation] = &[
    Designation {
        name: "6205",
        geometry: BearingGeometry {
            balls: 9,
            ball_diameter_mm: 0.3126 * MM_PER_INCH,
            pitch_diameter_mm: 1.537 * MM_PER_INCH,
            contact_angle_deg: 0.0,
        },
        source: "Case Western Reserve University Bearing Data Center, \"Apparatus & \
                 Procedures\": drive end bearing SKF 6205-2RS JEM, 9 balls, ball diameter \
                 0.3126 in, pitch diameter 1.537 in; published defect frequencies (x shaft \
                 frequency) inner ring 5.4152, outer ring 3.5848, cage 0.39828, rolling \
                 element 4.7135",
    },
    Designation {
        name: "6203",
        geometry: BearingGeometry {
            balls: 8,
            ball_diameter_mm: 0.2656 * MM_PER_INCH,
            pitch_diameter_mm: 1.122 * MM_PER_INCH,
            contact_angle_deg: 0.0,
        },
        source: "Case Western Reserve University Bearing Data Center, \"Apparatus & \
                 Procedures\": fan end bearing SKF 6203-2RS JEM, 8 balls, ball diameter \
                 0.2656 in, pitch diameter 1.122 in; published defect frequencies (x shaft \
                 frequency) inner ring 4.9469, outer ring 3.0530, cage 0.3817, rolling \
                 element 3.9874",
    },
];

/// The table entry for a designation such as "6205", "6205-2RS", "6205-2RS JEM" or
/// "6205 2rs": case-insensitive, and everything from the first '-' or blank on is a seal,
/// shield or clearance suffix, which does not change the ball set.
pub fn lookup(name: &str) -> Option<&'static Designation> {
    let base = name
        .trim()
        .split(|c: char| c == '-' || c.is_whitespace())
        .next()?;
    DESIGNATIONS
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(base))
}

/// The geometry of a known designation (see [`lookup`] for the accepted spellings).
pub fn designation(name: &str) -> Option<BearingGeometry> {
    lookup(name).map(|d| d.geometry)
}

/// Bearing component a family of defect lines points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// BPFO family.
    OuterRace,
    /// BPFI family.
    InnerRace,
    /// Ball defect (2×BSF) and BSF family.
    Ball,
    /// FTF (cage) family: a damaged ball is modulated at cage rate, and so is a cage
    /// fault, so the envelope alone cannot tell them apart.
    BallOrCage,
}

impl Component {
    /// Every component, in the order [`diagnose`] reports ties.
    pub const ALL: [Component; 4] = [
        Component::OuterRace,
        Component::InnerRace,
        Component::Ball,
        Component::BallOrCage,
    ];

    /// Stable identifier for records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::OuterRace => "outer_race",
            Component::InnerRace => "inner_race",
            Component::Ball => "ball",
            Component::BallOrCage => "ball_or_cage",
        }
    }

    /// Human wording for alert text.
    pub fn describe(self) -> &'static str {
        match self {
            Component::OuterRace => "outer race",
            Component::InnerRace => "inner race",
            Component::Ball => "ball (rolling element)",
            Component::BallOrCage => {
                "ball or cage (cage-rate modulation: a damaged ball passes the load zone \
                 once per cage revolution)"
            }
        }
    }

    /// The defect frequencies of this family, as multiples of the shaft frequency.
    fn lines(self, m: &DefectMultipliers) -> Vec<f64> {
        match self {
            Component::OuterRace => vec![m.bpfo],
            Component::InnerRace => vec![m.bpfi],
            Component::Ball => vec![m.ball_defect(), m.bsf],
            Component::BallOrCage => vec![m.ftf],
        }
    }

    /// Name of the family's lines with their frequencies, for alert text.
    fn line_label(self, shaft_hz: f64, m: &DefectMultipliers) -> String {
        match self {
            Component::OuterRace => {
                format!(
                    "outer race defect frequency (BPFO {:.1} Hz)",
                    m.bpfo * shaft_hz
                )
            }
            Component::InnerRace => {
                format!(
                    "inner race defect frequency (BPFI {:.1} Hz)",
                    m.bpfi * shaft_hz
                )
            }
            Component::Ball => format!(
                "ball defect frequency (2xBSF {:.1} Hz, BSF {:.1} Hz)",
                m.ball_defect() * shaft_hz,
                m.bsf * shaft_hz
            ),
            Component::BallOrCage => {
                format!("cage frequency (FTF {:.1} Hz)", m.ftf * shaft_hz)
            }
        }
    }
}

/// Line level of each defect family in one envelope spectrum: the mean over its
/// harmonics of (peak within ±1 %) / (noise floor). Dimensionless, so levels of different
/// channels, gains and units compare, and a baseline is a [`FamilyLevels`] too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FamilyLevels {
    /// Cage (FTF) family.
    pub ftf: f64,
    /// Ball family: harmonics of 2×BSF and of BSF. 2×BSF is both the first ball defect
    /// harmonic and the second BSF harmonic, so the strongest ball line counts twice.
    pub ball: f64,
    /// Outer race (BPFO) family.
    pub bpfo: f64,
    /// Inner race (BPFI) family.
    pub bpfi: f64,
}

impl FamilyLevels {
    /// The level of the family that points at `c`.
    pub fn get(&self, c: Component) -> f64 {
        match c {
            Component::OuterRace => self.bpfo,
            Component::InnerRace => self.bpfi,
            Component::Ball => self.ball,
            Component::BallOrCage => self.ftf,
        }
    }

    fn set(&mut self, c: Component, value: f64) {
        match c {
            Component::OuterRace => self.bpfo = value,
            Component::InnerRace => self.bpfi = value,
            Component::Ball => self.ball = value,
            Component::BallOrCage => self.ftf = value,
        }
    }

    const ZERO: FamilyLevels = FamilyLevels {
        ftf: 0.0,
        ball: 0.0,
        bpfo: 0.0,
        bpfi: 0.0,
    };
}

/// One harmonic of one family, located in the spectrum.
struct Harmonic {
    family: Component,
    hz: f64,
    bin: usize,
}

/// Line levels of the four defect families in an envelope (demodulated) amplitude
/// spectrum whose bin `j` is at `j * df_hz`.
///
/// For each harmonic h = 1..=[`HARMONICS`] of each family frequency the peak is the
/// largest bin within ±[`SPEED_TOLERANCE`] (at least ±1 bin) of it, divided by the noise
/// floor: the median bin from [`NOISE_FLOOR_FROM_HZ`] up to [`NOISE_FLOOR_SPAN`] times the
/// highest harmonic used (or the last bin). A median rather than a mean, because the
/// defect lines themselves must not raise the floor they are measured against.
///
/// Harmonics beyond the spectrum are left out of the mean. `None` when `df_hz` or
/// `shaft_hz` is not a positive finite number, when some family has no harmonic inside
/// the spectrum, or when the noise floor is not positive (an all-zero or NaN spectrum):
/// such a spectrum says nothing about the bearing.
pub fn family_levels(
    spectrum: &[f64],
    df_hz: f64,
    shaft_hz: f64,
    m: &DefectMultipliers,
) -> Option<FamilyLevels> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(df_hz) || !positive(shaft_hz) || spectrum.len() < 2 {
        return None;
    }
    let last = spectrum.len() - 1;

    let mut harmonics = Vec::new();
    for family in Component::ALL {
        let before = harmonics.len();
        for line in family.lines(m) {
            for h in 1..=HARMONICS {
                let hz = f64::from(h) * line * shaft_hz;
                let bin = (hz / df_hz).round();
                // Bin 0 is the envelope mean, not a line.
                if bin.is_finite() && bin >= 1.0 && bin <= last as f64 {
                    harmonics.push(Harmonic {
                        family,
                        hz,
                        bin: bin as usize,
                    });
                }
            }
        }
        if harmonics.len() == before {
            return None;
        }
    }

    let highest_hz = harmonics.iter().map(|h| h.hz).fold(0.0, f64::max);
    let floor_lo = ((NOISE_FLOOR_FROM_HZ / df_hz).ceil() as usize).max(1);
    let floor_hi = ((NOISE_FLOOR_SPAN * highest_hz / df_hz).floor() as usize).min(last);
    let floor = median(spectrum.get(floor_lo..=floor_hi)?)?;
    if !positive(floor) {
        return None;
    }

    let mut sums = FamilyLevels::ZERO;
    let mut counts = FamilyLevels::ZERO;
    for h in &harmonics {
        let half = ((SPEED_TOLERANCE * h.hz / df_hz).round() as usize).max(1);
        let lo = h.bin.saturating_sub(half).max(1);
        let hi = (h.bin + half).min(last);
        let peak = spectrum[lo..=hi].iter().copied().fold(f64::NAN, f64::max);
        sums.set(h.family, sums.get(h.family) + peak / floor);
        counts.set(h.family, counts.get(h.family) + 1.0);
    }
    let mut levels = FamilyLevels::ZERO;
    for family in Component::ALL {
        let level = sums.get(family) / counts.get(family);
        if !level.is_finite() {
            return None;
        }
        levels.set(family, level);
    }
    Some(levels)
}

/// Median of a non-empty slice (mean of the two middle values for an even length).
fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// Which component an envelope spectrum implicates, and how strongly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    /// The likely defective component, or `None` when no family stands out.
    pub component: Option<Component>,
    /// Each family's level relative to its reference (the channel's baseline, or
    /// [`NO_BASELINE_REFERENCE`] without one).
    pub ratios: FamilyLevels,
    /// One sentence for the alert, with the defect frequencies in Hz.
    pub text: String,
    /// Each family's defect frequency at this shaft speed, Hz (ball: 2×BSF), for the
    /// status page's envelope-spectrum plot.
    pub defect_hz: FamilyLevels,
}

/// Names the likely defective component from the family levels `now`, compared to the
/// channel's `baseline` levels (learned on the healthy machine), at shaft speed
/// `shaft_hz` (used only for the frequencies in the text).
///
/// The family with the largest ratio is named when that ratio is at least [`MIN_RATIO`]
/// and at least [`MIN_MARGIN`] times the second largest. Without a baseline, or for a
/// family whose baseline level is not a positive number, the reference is
/// [`NO_BASELINE_REFERENCE`] (twice the noise floor), and the text says so.
pub fn diagnose(
    now: &FamilyLevels,
    baseline: Option<&FamilyLevels>,
    shaft_hz: f64,
    m: &DefectMultipliers,
) -> Diagnosis {
    let mut ratios = FamilyLevels::ZERO;
    for family in Component::ALL {
        let reference = baseline
            .map(|b| b.get(family))
            .filter(|b| b.is_finite() && *b > 0.0)
            .unwrap_or(NO_BASELINE_REFERENCE);
        ratios.set(family, now.get(family) / reference);
    }

    // A NaN ratio (NaN input) ranks last instead of hiding a real line.
    let rank = |c: Component| {
        let r = ratios.get(c);
        if r.is_nan() {
            f64::NEG_INFINITY
        } else {
            r
        }
    };
    let mut order = Component::ALL;
    // Stable sort: ties keep the order of `Component::ALL`.
    order.sort_by(|a, b| rank(*b).total_cmp(&rank(*a)));
    let (top, second) = (order[0], order[1]);
    let (top_ratio, second_ratio) = (rank(top), rank(second));
    let stands_out = top_ratio >= MIN_RATIO && top_ratio >= MIN_MARGIN * second_ratio;

    let reference = if baseline.is_some() {
        "this channel's baseline level"
    } else {
        "the reference level of twice the noise floor (no baseline learned yet)"
    };
    let mut text = String::from("Envelope spectrum: ");
    let label = top.line_label(shaft_hz, m);
    // Writing to a String cannot fail.
    let _ = if stands_out {
        write!(
            text,
            "{label} and harmonics at {top_ratio:.1}x {reference}; likely component: {}",
            top.describe()
        )
    } else {
        write!(
            text,
            "no bearing defect frequency stands out; the highest is the {label} at \
             {top_ratio:.1}x {reference}"
        )
    };
    Diagnosis {
        component: stands_out.then_some(top),
        ratios,
        text,
        defect_hz: FamilyLevels {
            ftf: m.ftf * shaft_hz,
            ball: m.ball_defect() * shaft_hz,
            bpfo: m.bpfo * shaft_hz,
            bpfi: m.bpfi * shaft_hz,
        },
    }
}

#[cfg(test)]
mod tests;
