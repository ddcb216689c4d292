"""netlab: declarative labs of real network namespaces with real NATs.

See topology.py for the picture and address plan, nat.py for how each NAT type is built,
lab.py for the Lab/Host API, probe.py for NAT behaviour probes.
"""

from enclave.netlab.lab import Host, Lab, SiteInfo
from enclave.netlab.netns import NetlabError
from enclave.netlab.topology import NatType, Netem, Site, Topology

__all__ = ["Host", "Lab", "NatType", "Netem", "NetlabError", "Site", "SiteInfo", "Topology"]
