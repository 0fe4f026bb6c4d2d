#!/usr/bin/env python3
"""Where all of the machine's CPU goes while the gateway starts envs (BENCHMARKS.md §5).

    cpuacct.py snap FILE          # every task's CPU so far, and /proc/stat's cpu line
    cpuacct.py diff A B STARTS    # per group, ms of CPU per start between snapshots A and B

A snapshot holds, per process, the run time of each of its threads from
/proc/PID/task/TID/schedstat (nanoseconds, exact; a thread that exited
before the snapshot is not in it) and utime+stime and cutime+cstime from
/proc/PID/stat (clock ticks, with exited threads and reaped children).
diff charges a process its run time between A and B (all of it if it
started after A; the gateway its stat ticks if larger, since spawner
threads come and go), groups processes by name (the gateway "envgate",
the trampoline, which execs as /proc/self/fd/N and so is named by its
number, the demo server, benchtool, kworker, ksoftirqd, rcu, other) and
compares the sum, plus /proc/stat's irq and softirq, with /proc/stat's
busy time over the same interval. Children reaped between A and B (say
benchtool, run by the bench script) show only in their parents' cutime
and cstime: diff prints that sum apart. Run as root; reading every
task takes about a second at 2,000 envs (its own CPU shows as python3).
"""
import os, sys, json, re
HZ = os.sysconf('SC_CLK_TCK')
def snap(path):
    procs = {}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            st = open(f'/proc/{p}/stat').read()
            comm = st[st.index('(')+1:st.rindex(')')]
            f = st[st.rindex(')')+2:].split()
            ppid = int(f[1]); ut, stt, cut, cst = map(int, f[11:15]); start = int(f[19])
            run = 0; wait = 0; nthr = 0
            for t in os.listdir(f'/proc/{p}/task'):
                try:
                    a = open(f'/proc/{p}/task/{t}/schedstat').read().split()
                    run += int(a[0]); wait += int(a[1]); nthr += 1
                except OSError: pass
            procs[p] = dict(comm=comm, ppid=ppid, ticks=ut+stt, cticks=cut+cst, start=start, run=run, wait=wait, thr=nthr)
        except (OSError, ValueError): pass
    cpu = open('/proc/stat').readline().split()[1:]
    json.dump(dict(procs=procs, cpu=list(map(int, cpu)), up=float(open('/proc/uptime').read().split()[0])), open(path, 'w'))
def group(comm):
    if comm.isdigit(): return 'init'  # envgate-init, exec'd through /proc/self/fd/N
    for pre, g in (('envgate-init','init'),('envgate-demo','demo'),('envgate','gateway'),('benchtool','benchtool'),
                   ('kworker','kworker'),('ksoftirqd','ksoftirqd'),('rcu','rcu'),('migration','migration')):
        if comm.startswith(pre): return g
    return 'other'
def diff(a, b, starts):
    A = json.load(open(a)); B = json.load(open(b)); starts = float(starts)
    g = {}; gw = {}; cnt = {}; other = {}
    for p, q in B['procs'].items():
        o = A['procs'].get(p)
        if o and o['start'] != q['start']: o = None
        run = q['run'] - (o['run'] if o else 0)
        wait = q['wait'] - (o['wait'] if o else 0)
        # the gateway: ticks (includes its exited threads); 10 ms granularity is nothing over the interval
        if q['comm'] == 'envgate':
            run = max(run, (q['ticks'] - (o['ticks'] if o else 0)) * 1e9 / HZ)
        k = group(q['comm'])
        g[k] = g.get(k, 0) + run; gw[k] = gw.get(k, 0) + wait; cnt[k] = cnt.get(k, 0) + 1
        if k == 'other': other[q['comm']] = other.get(q['comm'], 0) + run
    # time of processes gone by B, as far as A saw it, is lost; their reaped time shows in parents' cticks
    reaped = sum((q['cticks'] - A['procs'][p]['cticks']) for p, q in B['procs'].items() if p in A['procs'] and A['procs'][p]['start'] == q['start']) * 1e9 / HZ
    gone = [A['procs'][p]['comm'] for p in A['procs'] if p not in B['procs']]
    c = [y - x for x, y in zip(A['cpu'], B['cpu'])]
    tick = 1e9 / HZ
    busy = (c[0] + c[1] + c[2] + c[5] + c[6] + c[7]) * tick
    wall = B['up'] - A['up']
    print(f"interval {wall:.2f} s, starts {starts:.0f} ({starts/wall:.1f}/s); /proc/stat busy {busy/1e9:.2f} s of {sum(c)*tick/1e9:.2f} s CPU "
          f"(user {c[0]*tick/1e9:.2f} sys {c[2]*tick/1e9:.2f} irq {c[5]*tick/1e9:.2f} softirq {c[6]*tick/1e9:.2f} iowait {c[4]*tick/1e9:.2f} idle {c[3]*tick/1e9:.2f})")
    tot = 0
    print(f"{'group':12} {'ms/start':>9} {'share':>6} {'runq wait ms/start':>18} {'procs':>6}")
    for k in sorted(g, key=lambda k: -g[k]):
        tot += g[k]
        print(f"{k:12} {g[k]/1e6/starts:9.2f} {g[k]/busy*100:5.1f}% {gw[k]/1e6/starts:18.2f} {cnt[k]:6}")
    irqt = (c[5] + c[6]) * tick
    print(f"{'irq+softirq':12} {irqt/1e6/starts:9.2f} {irqt/busy*100:5.1f}%  (/proc/stat columns, not charged to tasks)")
    print(f"{'tasks+irq':12} {(tot+irqt)/1e6/starts:9.2f} {(tot+irqt)/busy*100:5.1f}%   vs busy {busy/1e6/starts:.2f} ms/start")
    print(f"reaped children (cutime+cstime deltas) {reaped/1e6/starts:.2f} ms/start; processes gone: {len(gone)} {sorted(set(gone))[:10]}")
    print("top 'other':", ', '.join(f"{k} {v/1e6/starts:.2f}" for k, v in sorted(other.items(), key=lambda x: -x[1])[:10]))
if sys.argv[1] == 'snap': snap(sys.argv[2])
else: diff(*sys.argv[2:5])
