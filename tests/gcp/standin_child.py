"""Run by test_standin_processes: a process that starts a stand-in, boots one VM whose startup
script records its pid, prints that pid, then waits to be killed."""

import sys
import time

from burla_backend_gcp import clients
from burla_backend_gcp.standin import StandIn
from tests.gcp.conftest import vm_instance

standin = StandIn().start()
instances = clients.instances(endpoint=standin.url, credentials=standin.credentials())
op = instances.insert(project=standin.project_id, zone="us-central1-a",
                      instance_resource=vm_instance("orphan-vm", script="echo $$ > pid; sleep 300"))
clients.wait_zone_operation(op, project=standin.project_id, zone="us-central1-a", endpoint=standin.url,
                            credentials=standin.credentials())
vm = standin.compute.wait_for_script("orphan-vm")
print(vm.process.pid, flush=True)
sys.stdout.close()
time.sleep(600)
