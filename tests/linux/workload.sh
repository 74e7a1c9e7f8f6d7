# crane86 Linux boot test workload: run by the guest's /init (scripts/linux-guest.sh --init),
# which powers the machine off when this script returns. Every result line starts with
# "RESULT " so the test can pick them out of the console log.
echo "RESULT uname-r $(uname -r)"
echo "RESULT cpuinfo-begin"
cat /proc/cpuinfo
echo "RESULT cpuinfo-end"
echo "RESULT interrupts-begin"
cat /proc/interrupts
echo "RESULT interrupts-end"
seq 1 100000 > /tmp/seq.txt
echo "RESULT seq-lines $(wc -l < /tmp/seq.txt)"
echo "RESULT seq-sha256 $(sha256sum /tmp/seq.txt | cut -d' ' -f1)"
gzip -9 -c /tmp/seq.txt > /tmp/seq.gz
echo "RESULT gzip-roundtrip-sha256 $(gzip -dc /tmp/seq.gz | sha256sum | cut -d' ' -f1)"
echo "RESULT sort-rn-sha256 $(sort -rn /tmp/seq.txt | sha256sum | cut -d' ' -f1)"
# 100 processes, each a fork + exec of busybox: the counter only advances if every one ran.
n=0
while [ "$n" -lt 100 ]; do
    n=$(/bin/busybox expr "$n" + 1)
done
echo "RESULT execs $n"
echo "RESULT done"
