//! Operator-defined regions, so filters can say `region == "eu-west"` instead
//! of repeating coordinates.
//!
//! A region is a bounding box or a polygon over (latitude, longitude) taken as
//! a plane. The first region, in definition order, that contains a point is
//! the point's region, so more specific regions go first.
//!
//! Across the antimeridian: a bounding box whose `min_lon` is greater than its
//! `max_lon` wraps (`min_lon: 170, max_lon: -170` is the 20° band around
//! ±180°). Polygon edges are straight lines in that plane and never wrap: a
//! polygon spanning the antimeridian must be given as two polygons (or boxes)
//! meeting at ±180°.
//!
//! Edges: boxes include their boundary. Polygons use ray casting, which puts a
//! point lying exactly on an edge on one side or the other depending on the
//! edge's direction; regions meant to tile an area without gaps should share
//! edges (a point on a shared edge then belongs to exactly one of them).
//!
//! The JSON form, a list kept in order:
//! `[{"name": "eu-west", "bbox": {"min_lat": 35, "max_lat": 60, "min_lon": -11, "max_lon": 5}},
//!   {"name": "alps", "polygon": [[45.8, 6.1], [47.8, 9.5], [46.4, 13.8]]}]`.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most regions one fleet may define.
pub const MAX_REGIONS: usize = 1_024;
/// Most vertices in one polygon.
pub const MAX_VERTICES: usize = 1_000;
/// Fewest vertices in one polygon.
pub const MIN_VERTICES: usize = 3;
/// Longest region name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a set of regions was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionError {
    #[error("at most {MAX_REGIONS} regions may be defined")]
    TooManyRegions,
    #[error("region names must not be empty")]
    EmptyName,
    #[error("region name {0:?} is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong(String),
    #[error("region {0:?} is defined twice")]
    DuplicateName(String),
    #[error("region {region:?}: {what} is not a finite number")]
    NotFinite { region: String, what: &'static str },
    #[error("region {region:?}: latitude {value} is outside -90..=90")]
    LatitudeOutOfRange { region: String, value: f64 },
    #[error("region {region:?}: longitude {value} is outside -180..=180")]
    LongitudeOutOfRange { region: String, value: f64 },
    #[error("region {region:?}: min_lat {min} is greater than max_lat {max}")]
    InvertedLatitudes { region: String, min: f64, max: f64 },
    #[error("region {region:?}: a polygon needs at least {MIN_VERTICES} vertices, got {count}")]
    TooFewVertices { region: String, count: usize },
    #[error("region {0:?}: a polygon may have at most {MAX_VERTICES} vertices")]
    TooManyVertices(String),
    #[error("region {0:?}: give exactly one of \"bbox\" and \"polygon\"")]
    Shape(String),
}

/// A latitude/longitude rectangle; see the module doc for wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundingBox {
    pub min_lat: f64,
    pub max_lat: f64,
    pub min_lon: f64,
    pub max_lon: f64,
}

impl BoundingBox {
    /// Whether the point lies inside or on the boundary.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if lat < self.min_lat || lat > self.max_lat {
            return false;
        }
        if self.min_lon <= self.max_lon {
            lon >= self.min_lon && lon <= self.max_lon
        } else {
            lon >= self.min_lon || lon <= self.max_lon
        }
    }
}

/// The outline of a region.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Box(BoundingBox),
    /// Vertices as `[lat, lon]`, the last joined back to the first.
    Polygon(Vec<[f64; 2]>),
}

/// One named region, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    name: Arc<str>,
    shape: Shape,
    /// For polygons: the enclosing box, to skip most points cheaply.
    bounds: BoundingBox,
}

impl Region {
    /// Validates a region.
    pub fn new(name: &str, shape: Shape) -> Result<Region, RegionError> {
        if name.is_empty() {
            return Err(RegionError::EmptyName);
        }
        if name.len() > MAX_NAME_LEN {
            let mut end = MAX_NAME_LEN;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            return Err(RegionError::NameTooLong(name[..end].to_string()));
        }
        let region = || name.to_string();
        let check_lat = |what: &'static str, v: f64| -> Result<(), RegionError> {
            if !v.is_finite() {
                return Err(RegionError::NotFinite {
                    region: region(),
                    what,
                });
            }
            if !(-90.0..=90.0).contains(&v) {
                return Err(RegionError::LatitudeOutOfRange {
                    region: region(),
                    value: v,
                });
            }
            Ok(())
        };
        let check_lon = |what: &'static str, v: f64| -> Result<(), RegionError> {
            if !v.is_finite() {
                return Err(RegionError::NotFinite {
                    region: region(),
                    what,
                });
            }
            if !(-180.0..=180.0).contains(&v) {
                return Err(RegionError::LongitudeOutOfRange {
                    region: region(),
                    value: v,
                });
            }
            Ok(())
        };
        let bounds = match &shape {
            Shape::Box(b) => {
                check_lat("min_lat", b.min_lat)?;
                check_lat("max_lat", b.max_lat)?;
                check_lon("min_lon", b.min_lon)?;
                check_lon("max_lon", b.max_lon)?;
                if b.min_lat > b.max_lat {
                    return Err(RegionError::InvertedLatitudes {
                        region: region(),
                        min: b.min_lat,
                        max: b.max_lat,
                    });
                }
                *b
            }
            Shape::Polygon(vertices) => {
                if vertices.len() < MIN_VERTICES {
                    return Err(RegionError::TooFewVertices {
                        region: region(),
                        count: vertices.len(),
                    });
                }
                if vertices.len() > MAX_VERTICES {
                    return Err(RegionError::TooManyVertices(region()));
                }
                let mut b = BoundingBox {
                    min_lat: f64::INFINITY,
                    max_lat: f64::NEG_INFINITY,
                    min_lon: f64::INFINITY,
                    max_lon: f64::NEG_INFINITY,
                };
                for &[lat, lon] in vertices {
                    check_lat("a vertex latitude", lat)?;
                    check_lon("a vertex longitude", lon)?;
                    b.min_lat = b.min_lat.min(lat);
                    b.max_lat = b.max_lat.max(lat);
                    b.min_lon = b.min_lon.min(lon);
                    b.max_lon = b.max_lon.max(lon);
                }
                b
            }
        };
        Ok(Region {
            name: Arc::from(name),
            shape,
            bounds,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared with the devices placed in this region.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Whether the point is in this region; see the module doc for edges.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if !self.bounds.contains(lat, lon) {
            return false;
        }
        match &self.shape {
            Shape::Box(_) => true,
            Shape::Polygon(v) => ray_cast(v, lat, lon),
        }
    }
}

/// Even-odd rule: a ray from the point towards +lon crosses the outline an
/// odd number of times when the point is inside.
fn ray_cast(vertices: &[[f64; 2]], lat: f64, lon: f64) -> bool {
    let mut inside = false;
    let mut j = vertices.len().wrapping_sub(1);
    for (i, &[lat_i, lon_i]) in vertices.iter().enumerate() {
        let Some(&[lat_j, lon_j]) = vertices.get(j) else {
            return false;
        };
        if (lat_i > lat) != (lat_j > lat) {
            // lat_i != lat_j here, so the division is defined.
            let cross = lon_i + (lat - lat_i) * (lon_j - lon_i) / (lat_j - lat_i);
            if lon < cross {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// The regions of a fleet, in definition order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Regions {
    regions: Vec<Region>,
}

impl Regions {
    /// Validates a list of regions: names unique, at most [`MAX_REGIONS`].
    pub fn new(regions: Vec<Region>) -> Result<Regions, RegionError> {
        if regions.len() > MAX_REGIONS {
            return Err(RegionError::TooManyRegions);
        }
        let mut names = std::collections::HashSet::new();
        for r in &regions {
            if !names.insert(r.name()) {
                return Err(RegionError::DuplicateName(r.name().to_string()));
            }
        }
        Ok(Regions { regions })
    }

    /// Parses and validates the JSON form given in the module doc.
    pub fn from_json(json: &str) -> Result<Regions, RegionsJsonError> {
        serde_json::from_str(json).map_err(RegionsJsonError)
    }

    /// The first region containing the point. Points that are not finite or
    /// out of range are in no region.
    pub fn region_of(&self, lat: f64, lon: f64) -> Option<&str> {
        self.shared_region_of(lat, lon).map(|n| &**n)
    }

    /// As [`Regions::region_of`], with the name shared rather than borrowed.
    pub fn shared_region_of(&self, lat: f64, lon: f64) -> Option<&Arc<str>> {
        if !valid_point(lat, lon) {
            return None;
        }
        self.regions
            .iter()
            .find(|r| r.contains(lat, lon))
            .map(Region::shared_name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter()
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

/// Whether a coordinate pair is a point on Earth.
pub fn valid_point(lat: f64, lon: f64) -> bool {
    lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
}

/// Why the JSON form of regions was refused: malformed, or invalid (the
/// message then carries the [`RegionError`]).
#[derive(Debug, thiserror::Error)]
#[error("invalid regions: {0}")]
pub struct RegionsJsonError(#[source] serde_json::Error);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionJson {
    name: String,
    #[serde(default)]
    bbox: Option<BoundingBox>,
    #[serde(default, deserialize_with = "bounded_vertices")]
    polygon: Option<Vec<[f64; 2]>>,
}

/// Reads at most one vertex more than allowed, so an oversized polygon is
/// refused without being held in memory.
fn bounded_vertices<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<[f64; 2]>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<[f64; 2]>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX_VERTICES} [lat, lon] pairs")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(p) = seq.next_element::<[f64; 2]>()? {
                if out.len() == MAX_VERTICES {
                    return Err(de::Error::custom(format!(
                        "a polygon may have at most {MAX_VERTICES} vertices"
                    )));
                }
                out.push(p);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V).map(Some)
}

impl<'de> Deserialize<'de> for Regions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Regions, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Regions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of at most {MAX_REGIONS} regions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Regions, A::Error> {
                let mut out = Vec::new();
                while let Some(r) = seq.next_element::<RegionJson>()? {
                    if out.len() == MAX_REGIONS {
                        return Err(de::Error::custom(RegionError::TooManyRegions));
                    }
                    let shape = match (r.bbox, r.polygon) {
                        (Some(b), None) => Shape::Box(b),
                        (None, Some(p)) => Shape::Polygon(p),
                        _ => return Err(de::Error::custom(RegionError::Shape(r.name))),
                    };
                    out.push(Region::new(&r.name, shape).map_err(de::Error::custom)?);
                }
                Regions::new(out).map_err(de::Error::custom)
            }
        }
        d.deserialize_seq(V)
    }
}

impl Serialize for Regions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            bbox: Option<&'a BoundingBox>,
            #[serde(skip_serializing_if = "Option::is_none")]
            polygon: Option<&'a [[f64; 2]]>,
        }
        s.collect_seq(self.regions.iter().map(|r| match &r.shape {
            Shape::Box(b) => Out {
                name: r.name(),
                bbox: Some(b),
                polygon: None,
            },
            Shape::Polygon(p) => Out {
                name: r.name(),
                bbox: None,
                polygon: Some(p),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(min_lat: f64, max_lat: f64, min_lon: f64, max_lon: f64) -> Shape {
        Shape::Box(BoundingBox {
            min_lat,
            max_lat,
            min_lon,
            max_lon,
        })
    }

    #[test]
    fn first_matching_region_wins() {
        let regions = Regions::new(vec![
            Region::new("berlin", bbox(52.3, 52.7, 13.0, 13.8)).unwrap(),
            Region::new("germany", bbox(47.2, 55.1, 5.8, 15.1)).unwrap(),
        ])
        .unwrap();
        assert_eq!(regions.region_of(52.52, 13.40), Some("berlin"));
        assert_eq!(regions.region_of(48.14, 11.58), Some("germany"));
        assert_eq!(regions.region_of(40.4, -3.7), None);
        assert_eq!(regions.region_of(f64::NAN, 13.4), None);
        assert_eq!(regions.region_of(91.0, 13.4), None);
    }

    #[test]
    fn boxes_include_their_boundary_and_wrap_across_the_antimeridian() {
        let r = Region::new("pacific", bbox(-10.0, 10.0, 170.0, -170.0)).unwrap();
        assert!(r.contains(0.0, 175.0));
        assert!(r.contains(0.0, -175.0));
        assert!(r.contains(0.0, 180.0));
        assert!(r.contains(10.0, 170.0));
        assert!(!r.contains(0.0, 0.0));
        assert!(!r.contains(0.0, 169.9));
        assert!(!r.contains(10.1, 175.0));
    }

    #[test]
    fn polygon_ray_casting() {
        // A concave "L": the notch at the top right is outside.
        let l = Region::new(
            "l",
            Shape::Polygon(vec![
                [0.0, 0.0],
                [0.0, 10.0],
                [5.0, 10.0],
                [5.0, 5.0],
                [10.0, 5.0],
                [10.0, 0.0],
            ]),
        )
        .unwrap();
        assert!(l.contains(2.0, 2.0));
        assert!(l.contains(2.0, 8.0));
        assert!(l.contains(8.0, 2.0));
        assert!(!l.contains(8.0, 8.0));
        assert!(!l.contains(-1.0, 2.0));
        assert!(!l.contains(2.0, 11.0));
    }

    #[test]
    fn polygons_sharing_an_edge_split_the_points_on_it() {
        let west = Region::new(
            "w",
            Shape::Polygon(vec![[0.0, 0.0], [0.0, 5.0], [10.0, 5.0], [10.0, 0.0]]),
        )
        .unwrap();
        let east = Region::new(
            "e",
            Shape::Polygon(vec![[0.0, 5.0], [0.0, 10.0], [10.0, 10.0], [10.0, 5.0]]),
        )
        .unwrap();
        for lat in [1.0, 2.5, 7.25] {
            assert!(
                west.contains(lat, 5.0) != east.contains(lat, 5.0),
                "lat {lat}"
            );
        }
    }

    #[test]
    fn validation() {
        let err = |name: &str, shape| Region::new(name, shape).unwrap_err();
        assert_eq!(err("", bbox(0.0, 1.0, 0.0, 1.0)), RegionError::EmptyName);
        assert!(matches!(
            err(&"é".repeat(40), bbox(0.0, 1.0, 0.0, 1.0)),
            RegionError::NameTooLong(_)
        ));
        assert!(matches!(
            err("a", bbox(0.0, 91.0, 0.0, 1.0)),
            RegionError::LatitudeOutOfRange { .. }
        ));
        assert!(matches!(
            err("a", bbox(0.0, 1.0, -181.0, 1.0)),
            RegionError::LongitudeOutOfRange { .. }
        ));
        assert!(matches!(
            err("a", bbox(f64::NAN, 1.0, 0.0, 1.0)),
            RegionError::NotFinite { .. }
        ));
        assert!(matches!(
            err("a", bbox(2.0, 1.0, 0.0, 1.0)),
            RegionError::InvertedLatitudes { .. }
        ));
        assert!(matches!(
            err("a", Shape::Polygon(vec![[0.0, 0.0], [1.0, 1.0]])),
            RegionError::TooFewVertices { count: 2, .. }
        ));
        assert!(matches!(
            err("a", Shape::Polygon(vec![[0.0, 0.0]; MAX_VERTICES + 1])),
            RegionError::TooManyVertices(_)
        ));
        assert!(matches!(
            err(
                "a",
                Shape::Polygon(vec![[0.0, 0.0], [1.0, f64::INFINITY], [2.0, 0.0]])
            ),
            RegionError::NotFinite { .. }
        ));
        let a = Region::new("a", bbox(0.0, 1.0, 0.0, 1.0)).unwrap();
        assert_eq!(
            Regions::new(vec![a.clone(), a]).unwrap_err(),
            RegionError::DuplicateName("a".into())
        );
    }

    #[test]
    fn json_round_trip_and_errors() {
        let json = r#"[{"name": "eu-west", "bbox": {"min_lat": 35, "max_lat": 60, "min_lon": -11, "max_lon": 5}},
                       {"name": "alps", "polygon": [[45.8, 6.1], [47.8, 9.5], [46.4, 13.8]]}]"#;
        let regions = Regions::from_json(json).unwrap();
        assert_eq!(regions.len(), 2);
        assert_eq!(regions.region_of(46.5, 9.0), Some("alps"));
        let again = serde_json::to_string(&regions).unwrap();
        assert_eq!(Regions::from_json(&again).unwrap(), regions);

        for bad in [
            r#"[{"name": "x"}]"#,
            r#"[{"name": "x", "bbox": {"min_lat": 0, "max_lat": 1, "min_lon": 0, "max_lon": 1}, "polygon": [[0,0],[1,1],[0,1]]}]"#,
            r#"[{"name": "x", "bbox": {"min_lat": 0, "max_lat": 100, "min_lon": 0, "max_lon": 1}}]"#,
            r#"[{"name": "x", "polygon": [[0, 0], [1, 1]]}]"#,
            r#"{"name": "x"}"#,
        ] {
            assert!(Regions::from_json(bad).is_err(), "{bad}");
        }
        let many = format!(
            r#"[{{"name": "x", "polygon": [{}]}}]"#,
            vec!["[0,0]"; MAX_VERTICES + 1].join(",")
        );
        let e = Regions::from_json(&many).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
    }
}
