//! Smokeping-style plots as SVG, drawn with plotters from the store's plot columns: per time
//! column a light band from the smallest to the largest RTT, a darker one up to the 90th
//! percentile, and the median as a bar coloured by the column's loss. A column whose runs all
//! failed is shaded red from top to bottom: a gap in the delays, never a 0.

use crate::store::{PlotColumn, PlotSeries};
use plotters::prelude::*;
use std::time::Duration;

/// The ranges a plot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// 1 hour.
    H1,
    /// 6 hours.
    H6,
    /// 24 hours.
    H24,
    /// 7 days.
    D7,
}

impl Range {
    /// Every range, shortest first.
    pub const ALL: [Range; 4] = [Range::H1, Range::H6, Range::H24, Range::D7];

    /// `1h`, `6h`, `24h` or `7d` (the `range` query parameter).
    pub fn name(self) -> &'static str {
        match self {
            Range::H1 => "1h",
            Range::H6 => "6h",
            Range::H24 => "24h",
            Range::D7 => "7d",
        }
    }

    /// The range named `s`.
    pub fn parse(s: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|r| r.name() == s)
    }

    /// How long it is.
    pub fn span(self) -> Duration {
        Duration::from_secs(match self {
            Range::H1 => 3600,
            Range::H6 => 6 * 3600,
            Range::H24 => 24 * 3600,
            Range::D7 => 7 * 86_400,
        })
    }
}

/// The `what` query parameter's words for each series.
pub const SERIES: [(&str, PlotSeries); 5] = [
    ("rtt", PlotSeries::Rtt),
    ("ipdv", PlotSeries::Ipdv),
    ("sd", PlotSeries::OneWaySd),
    ("ds", PlotSeries::OneWayDs),
    ("mos", PlotSeries::Mos),
];

/// The query string that asks for `series` (`what=sd`, `what=hop&hop=3`).
pub fn query(series: PlotSeries) -> String {
    match series {
        PlotSeries::Hop(ttl) => format!("what=hop&hop={ttl}"),
        s => format!("what={}", SERIES.iter().find(|(_, x)| *x == s).map_or("rtt", |(n, _)| *n)),
    }
}

/// How a series is drawn: its axis label, the factor from stored values to the axis, and what
/// an empty column means.
struct Look {
    axis: &'static str,
    scale: f64,
    /// A fixed axis (MOS 1 to 5) instead of one fitted to the values.
    fixed: Option<(f64, f64)>,
    /// A run without a value failed (RTT); otherwise it just did not measure this (one-way
    /// delays without synchronised clocks, MOS without a codec).
    missing_is_failure: bool,
    /// Said when no column has a value.
    none: &'static str,
}

fn look(s: PlotSeries) -> Look {
    let delay = |axis, none| Look { axis, scale: 1e-3, fixed: None, missing_is_failure: false, none };
    match s {
        PlotSeries::Rtt => Look {
            missing_is_failure: true,
            ..delay("RTT (ms)", "no RTT in this range: every run failed (shaded red)")
        },
        PlotSeries::Ipdv => delay("IPDV (ms)", "no IPDV in this range: it needs two replies in a run"),
        PlotSeries::OneWaySd => delay(
            "one-way source→destination (ms)",
            "no one-way delay in this range: the clocks are not declared synchronised",
        ),
        PlotSeries::OneWayDs => delay(
            "one-way destination→source (ms)",
            "no one-way delay in this range: the clocks are not declared synchronised",
        ),
        PlotSeries::Hop(_) => Look {
            missing_is_failure: true,
            ..delay(
                "RTT to the hop (ms)",
                "no reply from this hop in this range (shaded red): it did not answer its echoes",
            )
        },
        PlotSeries::Mos => Look {
            axis: "MOS",
            scale: 1.0,
            fixed: Some((1.0, 5.0)),
            missing_is_failure: false,
            none: "no MOS in this range: it needs a codec and replies",
        },
    }
}

/// How big a plot is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// With axes, labels and a legend (an operation's page, an embedded image).
    Full,
    /// A sparkline for the overview table: the bands only.
    Spark,
}

impl Size {
    /// Pixels.
    pub fn pixels(self) -> (u32, u32) {
        match self {
            Size::Full => (800, 300),
            Size::Spark => (160, 28),
        }
    }
    /// Columns across: one per few pixels.
    pub fn columns(self) -> u32 {
        match self {
            Size::Full => 240,
            Size::Spark => 60,
        }
    }
}

/// The median's colour for a loss percentage (smokeping's scale).
pub fn loss_colour(loss_pct: Option<f64>) -> RGBColor {
    match loss_pct {
        None => RGBColor(0x80, 0x80, 0x80),
        Some(l) if l <= 0.0 => RGBColor(0x00, 0x99, 0x00),
        Some(l) if l <= 2.0 => RGBColor(0x00, 0xb8, 0xe6),
        Some(l) if l <= 5.0 => RGBColor(0x00, 0x55, 0xff),
        Some(l) if l <= 10.0 => RGBColor(0x88, 0x00, 0xff),
        Some(l) if l <= 20.0 => RGBColor(0xd0, 0x00, 0xd0),
        Some(_) => RGBColor(0xff, 0x00, 0x00),
    }
}

const SMOKE_OUTER: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
const SMOKE_INNER: RGBColor = RGBColor(0xaa, 0xaa, 0xaa);
const FAILED: RGBColor = RGBColor(0xff, 0xcc, 0xcc);

/// The width of one column of a plot of `range` at `size`.
pub fn column_width(range: Range, size: Size) -> Duration {
    range.span() / size.columns()
}

/// `cols` of `series` (from [`crate::store::Store::plot_columns`] with [`column_width`]) drawn
/// for the range ending at `now_s` (seconds since the Unix epoch). `title` heads a full-size plot.
pub fn svg(cols: &[PlotColumn], series: PlotSeries, range: Range, size: Size, now_s: f64, title: &str) -> String {
    let mut out = String::new();
    // drawing into a String cannot fail for I/O reasons; a plotting error leaves what was drawn
    let _ = draw(&mut out, cols, &look(series), range, size, now_s, title);
    out
}

fn draw(
    out: &mut String,
    cols: &[PlotColumn],
    look: &Look,
    range: Range,
    size: Size,
    now_s: f64,
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let (w, h) = size.pixels();
    let root = SVGBackend::with_string(out, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let from_s = now_s - range.span().as_secs_f64();
    let width_s = column_width(range, size).as_secs_f64();
    // delays under a millisecond (a LAN, loopback) read better in µs
    let top_ms = cols.iter().filter_map(|c| c.p90.or(c.max)).fold(0.0f64, f64::max) * look.scale;
    let (scale, axis) = if look.fixed.is_none() && top_ms > 0.0 && top_ms < 1.0 {
        (look.scale * 1000.0, look.axis.replace("(ms)", "(µs)"))
    } else {
        (look.scale, look.axis.to_string())
    };
    let ms = |v: Option<f64>| v.map(|v| v * scale);
    let top = cols.iter().filter_map(|c| ms(c.p90).or(ms(c.max))).fold(0.0f64, f64::max);
    let (y_min, y_max) = look.fixed.unwrap_or((0.0, if top > 0.0 { top * 1.3 } else { 1.0 }));
    let mut chart = match size {
        Size::Full => ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(from_s..now_s, y_min..y_max)?,
        Size::Spark => ChartBuilder::on(&root).margin(1).build_cartesian_2d(from_s..now_s, y_min..y_max)?,
    };
    if size == Size::Full {
        let label = move |x: &f64| time_label(*x, range);
        chart
            .configure_mesh()
            .x_labels(7)
            .y_labels(6)
            .x_label_formatter(&label)
            .y_desc(axis.as_str())
            .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
            .draw()?;
    }
    let x_of = |c: &PlotColumn| {
        let x0 = (c.start_ns as f64 / 1e9).max(from_s);
        (x0, (x0 + width_s).min(now_s))
    };
    // failed columns first, full height
    let failed = cols.iter().filter(|c| look.missing_is_failure && c.runs > 0 && c.measured == 0);
    chart.draw_series(failed.map(|c| {
        let (x0, x1) = x_of(c);
        Rectangle::new([(x0, y_min), (x1, y_max)], FAILED.filled())
    }))?;
    let clip = |v: f64| v.clamp(y_min, y_max);
    let measured = || cols.iter().filter(|c| c.measured > 0);
    chart.draw_series(measured().filter_map(|c| {
        let (x0, x1) = x_of(c);
        Some(Rectangle::new([(x0, clip(ms(c.min)?)), (x1, clip(ms(c.max)?))], SMOKE_OUTER.filled()))
    }))?;
    chart.draw_series(measured().filter_map(|c| {
        let (x0, x1) = x_of(c);
        Some(Rectangle::new([(x0, clip(ms(c.min)?)), (x1, clip(ms(c.p90)?))], SMOKE_INNER.filled()))
    }))?;
    let bar = (y_max - y_min) / f64::from(h) * if size == Size::Full { 2.0 } else { 1.5 };
    chart.draw_series(measured().filter_map(|c| {
        let (x0, x1) = x_of(c);
        let m = clip(ms(c.mid)?);
        Some(Rectangle::new([(x0, m - bar), (x1, m + bar)], loss_colour(c.loss_pct()).filled()))
    }))?;
    if size == Size::Full {
        let legend = if cols.is_empty() {
            "no runs in this range".to_string()
        } else if cols.iter().all(|c| c.measured == 0) {
            look.none.to_string()
        } else {
            "median coloured by loss: 0% green, ≤2% cyan, ≤5% blue, ≤10% violet, ≤20% magenta, more red; \
             failed runs shaded red"
                .to_string()
        };
        root.draw(&Text::new(legend, (64, (h - 12) as i32), ("sans-serif", 11).into_font().color(&BLACK)))?;
    }
    root.present()?;
    Ok(())
}

/// An x-axis label: `HH:MM` (UTC), or `Mon 12` for the 7-day range.
fn time_label(x: f64, range: Range) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(x as i64) else { return String::new() };
    let f = match range {
        Range::D7 => time::macros::format_description!("[weekday repr:short] [day padding:none]"),
        _ => time::macros::format_description!("[hour]:[minute]"),
    };
    t.format(&f).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(
        start_s: i64,
        runs: u64,
        measured: u64,
        rtt: Option<(f64, f64, f64, f64)>,
        sent: u64,
        received: u64,
    ) -> PlotColumn {
        PlotColumn {
            start_ns: start_s * 1_000_000_000,
            runs,
            measured,
            min: rtt.map(|r| r.0),
            mid: rtt.map(|r| r.1),
            p90: rtt.map(|r| r.2),
            max: rtt.map(|r| r.3),
            sent,
            received,
        }
    }

    /// The rectangles of `svg` filled with `colour` (plotters writes `fill="#RRGGBB"`).
    fn rects(svg: &str, colour: RGBColor) -> Vec<&str> {
        let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", colour.0, colour.1, colour.2);
        svg.lines().filter(|l| l.starts_with("<rect") && l.contains(&fill)).collect()
    }

    #[test]
    fn a_failed_column_is_shaded_never_drawn_at_zero() {
        let now = 1_800_000_000.0;
        let w = column_width(Range::H1, Size::Full).as_secs() as i64;
        let base = now as i64 - 3600;
        let cols = vec![
            col(base + 10 * w, 1, 1, Some((900.0, 1000.0, 1100.0, 1500.0)), 10, 10),
            // every run failed: no delays at all
            col(base + 11 * w, 1, 0, None, 10, 0),
            col(base + 12 * w, 2, 2, Some((950.0, 1050.0, 1200.0, 2000.0)), 20, 19),
        ];
        let svg = svg(&cols, PlotSeries::Rtt, Range::H1, Size::Full, now, "t");
        assert!(svg.starts_with("<svg width=\"800\" height=\"300\""), "{svg}");
        assert_eq!(rects(&svg, FAILED).len(), 1, "one failed column");
        assert_eq!(rects(&svg, SMOKE_OUTER).len(), 2, "smoke only where RTTs were measured");
        assert_eq!(rects(&svg, SMOKE_INNER).len(), 2);
        // medians: no loss (green) and 5 % (blue)
        assert_eq!(rects(&svg, loss_colour(Some(0.0))).len(), 1);
        assert_eq!(rects(&svg, loss_colour(Some(5.0))).len(), 1);
        assert!(svg.contains("median coloured by loss"), "{svg}");
    }

    #[test]
    fn an_outage_says_so_in_words() {
        let now = 1_800_000_000.0;
        let cols = vec![col(now as i64 - 600, 3, 0, None, 3, 0)];
        let svg = svg(&cols, PlotSeries::Rtt, Range::H1, Size::Full, now, "t");
        assert!(svg.contains("no RTT in this range: every run failed (shaded red)"), "{svg}");
        assert_eq!(rects(&svg, SMOKE_OUTER).len(), 0);
        let empty = super::svg(&[], PlotSeries::Rtt, Range::H24, Size::Full, now, "t");
        assert!(empty.contains("no runs in this range"), "{empty}");
        let spark = super::svg(&cols, PlotSeries::Rtt, Range::H6, Size::Spark, now, "t");
        assert!(spark.starts_with("<svg width=\"160\" height=\"28\""), "{spark}");
        assert!(!spark.contains("<text"), "a sparkline has no labels: {spark}");
        // a column without one-way delays is not a failure: no red, and the reason in words
        let ow = super::svg(&cols, PlotSeries::OneWaySd, Range::H1, Size::Full, now, "t");
        assert_eq!(rects(&ow, FAILED).len(), 0, "{ow}");
        assert!(ow.contains("the clocks are not declared synchronised"), "{ow}");
    }

    #[test]
    fn ranges_parse_their_names() {
        for r in Range::ALL {
            assert_eq!(Range::parse(r.name()), Some(r));
        }
        assert_eq!(Range::parse("2h"), None);
        assert_eq!(column_width(Range::D7, Size::Full).as_secs(), 7 * 86_400 / 240);
    }
}
