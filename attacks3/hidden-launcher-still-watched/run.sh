#!/usr/bin/env bash
# Two launchers in one instance: the README says the second "is listed nowhere, counts for
# nothing ... and no operation reaches them". supd still opens a guest-agent connection to it
# (and keeps polling it), as to every running launcher on the host.
source "$(dirname "$0")/../common/lib.sh"
build_supd
static_image rtvm-fakeagent-$$ "$COMMON/fakeagent.c"
start_supd
docker run -d --name "$RUN_ID-a" --label "$LABEL" --label io.supd.application=rtvm-two \
    --label io.supd.service=vm --label io.supd.instance=1 --label io.supd.container=a \
    --label io.supd.vm-container=true rtvm-fakeagent-$$ /fakeagent sync /run/supd-vm/qga.sock >/dev/null
docker run -d --name "$RUN_ID-b" --label "$LABEL" --label io.supd.application=rtvm-two \
    --label io.supd.service=vm --label io.supd.instance=1 --label io.supd.container=b \
    --label io.supd.vm-container=true rtvm-fakeagent-$$ /fakeagent sync /run/supd-vm/qga.sock >/dev/null
CONTAINERS+=("$RUN_ID-a" "$RUN_ID-b")
sleep 6
echo "state: $(api "$BASE/rtvm-two/service-instances" | grep -o '"vm-container":{"name":"[^"]*"')"
echo "launcher a (the VM): $(docker logs "$RUN_ID-a" 2>&1 | grep -c client) connection(s) from supd"
echo "launcher b (hidden): $(docker logs "$RUN_ID-b" 2>&1 | grep -c client) connection(s) from supd"
