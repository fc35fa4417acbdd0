"""``bench.fleet``'s figures as a Markdown table: each figure beside its same-run reference, the ratio, the target."""
from __future__ import annotations

from typing import Callable

from bench.report import Row, table

TARGET_ACCEPT_S = 10.0  # key --accept-all of the whole fleet: "in seconds"
TARGET_RSS_KB = 40.0
TARGET_PRESENT_S = 60.0
TARGET_STORM_P99_MS = 50.0


def report(figures: dict, rtt: Callable[..., dict]) -> tuple[str, bool]:
    """The Markdown section and whether every target was met."""
    minions, ref = figures["minions"], figures["reference_links"]
    idle = rtt(figures["idle_rtt"])
    storm = rtt(figures["storm_rtt"])
    figures["idle_rtt_summary"], figures["storm_rtt_summary"] = idle, storm
    bus = figures["relay_bus"]
    made = figures["relay_made"]
    lossless = bus["new"] == made and bus["duplicates"] == 0 and bus["out_of_order"] == 0
    rss_kb, rss_ref_kb = figures["rss_per_link"] / 1024, figures["rss_per_link_ref"] / 1024
    rows = [
        Row(f"`key --accept-all` of {minions:,} pending keys (reference: of {ref} keys)", "s",
            figures["accept_s"], figures["accept_ref_s"], f"≤ {TARGET_ACCEPT_S:g} s",
            figures["accept_s"] <= TARGET_ACCEPT_S, "times"),
        Row(f"master RSS per link, {minions:,} links (reference: {ref} links)", "kB", round(rss_kb, 1),
            round(rss_ref_kb, 1),
            f"≤ {TARGET_RSS_KB:g} kB", rss_kb <= TARGET_RSS_KB, "times"),
        Row(f"… the reference group's after {figures.get('burst', 600)} messages each way on every link "
            "(libzmq's queues fill their chunks)", "kB", round(figures["rss_per_link_ref_traffic"] / 1024, 1), None,
            "", None),
        Row(f"all {minions + ref:,} present after a master restart (reference: {ref} links)", "s",
            figures["present_s"], figures["present_ref_s"], f"≤ {TARGET_PRESENT_S:g} s",
            figures["present_s"] <= TARGET_PRESENT_S, "times"),
        Row(f"relayed events on the master bus once each, {minions + ref:,} links × 1/s for "
            f"{figures['relay_seconds']:g} s (reference: events made)", "events", bus["new"], made, "lossless",
            lossless, "percent"),
        Row("… relayed events seen twice or out of order", "events", bus["duplicates"] + bus["out_of_order"], None,
            "0", bus["duplicates"] + bus["out_of_order"] == 0),
        Row("local round trip p50, reconnect storm (reference: fleet idle)", "ms", storm["p50"], idle["p50"], "",
            None, "times"),
        Row("local round trip p99, reconnect storm (reference: fleet idle)", "ms", storm["p99"], idle["p99"],
            f"≤ {TARGET_STORM_P99_MS:g} ms", storm["p99"] <= TARGET_STORM_P99_MS and not storm["timeouts"], "times"),
        Row("local round trip max, reconnect storm (reference: fleet idle)", "ms", storm["max"], idle["max"], "",
            None, "times"),
    ]
    passed = all(row.verdict is not False for row in rows)
    mb = 1024 * 1024
    notes = [
        f"Round trips timed: {idle['count']} idle, {storm['count']} in the storm ({storm['timeouts']} not back "
        f"within 5 s). The master's `relayed` counter: {figures['relay_master_counted']:,}; the subscriber "
        f"received {bus['events']:,} fleet events ({bus['duplicates']} twice, {bus['out_of_order']} out of order, "
        f"{bus.get('lost', 0)} lost to it); relay drained {figures['relay_drained_s']:.0f} s after it started.",
        f"Master: RSS {figures['master_rss_before'] / mb:.0f} MB before any link, "
        f"{figures['master_rss_links'] / mb:.0f} MB with every link, {figures['master_rss_after_storm'] / mb:.0f} MB "
        f"after the storm; open files {figures['master_nofile']} (soft hard); restart (SIGTERM to ready) "
        f"{figures['restart_s']:.1f} s. {minions:,} keys were pending {figures['pending_s']:.1f} s after the links "
        f"started; all present {figures['accepted_present_s']:.1f} s after the accept-all.",
        f"Largest `salt/presence/present`: {bus['presence_largest']:,} ids ({bus['presence_bytes']:,} bytes as "
        f"JSON) in {bus['presence_events']} events.",
        f"Links' counters after the storm: {figures['worker_counts']}.",
        f"Load: {figures['load_before']} before, {figures['load_after']} after.",
    ]
    text = "\n".join([f"### {minions:,} minions on one master (`{figures['command'].strip()}`, {figures['date']})",
                      "", table(rows, ours="fleet", reference="reference"), "", *notes])
    return text, passed
