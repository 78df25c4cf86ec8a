package bench

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// writeClusterOrder renders the issue-10 figures: order and repeats as the
// sockets saw them, the partitions' spread, the failover after a kill.
func writeClusterOrder(b *strings.Builder, rep *ClusterReport) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	l := rep.Loss
	p("## Order and exactly-once\n\n")
	p("| figure | value |\n| --- | --- |\n")
	p("| frames carrying the server's seq | %d |\n", l.Sequenced)
	p("| reordered (seq not above the socket's last, same subscription) | %d |\n", l.Reordered)
	p("| duplicates (a socket got the bench's event twice) | %d |\n", l.Duplicates)
	p("| repeats the pods dropped (dws_drops_total{reason=\"duplicate\"}) | %.0f |\n\n", rep.Partitions.ServerDuplicateDrops)
	if len(rep.Drops) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(rep.Drops)) {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, rep.Drops[k]))
		}
		p("Frames the live pods dropped during the step, by reason: %s.\n\n", strings.Join(parts, ", "))
	}

	pf := rep.Partitions
	p("## Partitions\n\n")
	if !pf.Exposed || pf.Owned == 0 {
		p("Not in use: no live pod owns a partition (dws_partitions_owned absent or 0).\n\n")
	} else {
		p("%d configured; the %d live pods own %.0f at the end (share %.2f each: least %.0f, most %.0f, largest gap to the share %.2f).",
			pf.Configured, pf.Live, pf.Owned, pf.Share, pf.Min, pf.Max, pf.MaxOff)
		if len(pf.Changes) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(pf.Changes)) {
				parts = append(parts, fmt.Sprintf("%s %.0f", k, pf.Changes[k]))
			}
			p(" Ownership changes during the step: %s.", strings.Join(parts, ", "))
		}
		if pf.Takeovers > 0 {
			p(" Takeovers: %.0f, mean %.3f s to consume; %.0f events pending from the previous owner.", pf.Takeovers, pf.TakeoverMeanSeconds, pf.TakeoverPending)
		}
		p("\n\n")
	}
	if f := rep.Failover; f != nil {
		p("## Failover\n\n")
		if f.Error != "" {
			p("The kill failed: %s.\n\n", f.Error)
			return
		}
		p("%s SIGKILLed %.2f s into the window; its %d sockets closed with it and are out of the loss check.", f.Pod, f.KilledAfter, f.Sockets)
		if f.Found {
			p(" Failover: **%.2f s** (the longest an event published within %.1f s of the kill waited, from the kill or its publish, to reach its sockets).\n\n", f.Seconds, f.Window)
		} else {
			p(" No event published within %.1f s of the kill reached any socket.\n\n", f.Window)
		}
	}
}
