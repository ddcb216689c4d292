"""A LAN host pretending to be a UPnP-IGD (the attacker of tests/netlab/portmap): it answers
every SSDP M-SEARCH with a LOCATION on its own address and serves a minimal IGD description
and SOAP answers (connected, external address FAKE_EXTERNAL, every mapping granted).

    python -m tests.support.fake_igd OWN_IP
        stdout: "ready" once both sockets listen, then one JSON line per request it got:
        {"kind": "ssdp", "from": IP, "st": ST} or
        {"kind": "http", "method": M, "path": P, "action": A}
        (A: the SOAPAction's action name, "" for a GET); it runs until killed

    igd = host.popen(fake_igd_argv(host.ip), env=ENV, cwd=REPO, stdout=PIPE, text=True)
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900
FAKE_EXTERNAL = "198.18.77.77"
CONTROL = "/ctl/IPConn"
SERVICE_IP = "urn:schemas-upnp-org:service:WANIPConnection:1"
SERVICE_CIF = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"
_out = threading.Lock()


def fake_igd_argv(own_ip: object) -> list[str]:
    return [sys.executable, "-m", "tests.support.fake_igd", str(own_ip)]


def _emit(record: dict[str, str]) -> None:
    with _out:
        print(json.dumps(record), flush=True)


def _service(kind: str, name: str) -> str:
    return (f"<service><serviceType>{kind}</serviceType><serviceId>urn:upnp-org:serviceId:"
            f"{name}</serviceId><controlURL>/ctl/{name}</controlURL><eventSubURL>/evt/{name}"
            f"</eventSubURL><SCPDURL>/{name}.xml</SCPDURL></service>")


DESCRIPTION = (
    '<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0">'
    "<specVersion><major>1</major><minor>0</minor></specVersion><device>"
    "<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>"
    "<friendlyName>fake</friendlyName><UDN>uuid:00000000-0000-0000-0000-000000000001</UDN>"
    "<deviceList><device>"
    "<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>"
    "<UDN>uuid:00000000-0000-0000-0000-000000000002</UDN>"
    f"<serviceList>{_service(SERVICE_CIF, 'CmnIfCfg')}</serviceList>"
    "<deviceList><device>"
    "<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>"
    "<UDN>uuid:00000000-0000-0000-0000-000000000003</UDN>"
    f"<serviceList>{_service(SERVICE_IP, 'IPConn')}</serviceList>"
    "</device></deviceList></device></deviceList></device></root>")

ANSWERS = {
    "GetStatusInfo": "<NewConnectionStatus>Connected</NewConnectionStatus>"
                     "<NewLastConnectionError>ERROR_NONE</NewLastConnectionError>"
                     "<NewUptime>100</NewUptime>",
    "GetExternalIPAddress": f"<NewExternalIPAddress>{FAKE_EXTERNAL}</NewExternalIPAddress>",
}


class _Handler(BaseHTTPRequestHandler):
    def _reply(self, body: str, ctype: str) -> None:
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        _emit({"kind": "http", "method": "GET", "path": self.path, "action": ""})
        self._reply(DESCRIPTION, 'text/xml; charset="utf-8"')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        action = (self.headers.get("SOAPAction") or "").strip('"').rpartition("#")[2]
        _emit({"kind": "http", "method": "POST", "path": self.path, "action": action})
        service = SERVICE_IP if self.path == CONTROL else SERVICE_CIF
        self._reply('<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/'
                    'soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/'
                    f'encoding/"><s:Body><u:{action}Response xmlns:u="{service}">'
                    f"{ANSWERS.get(action, '')}</u:{action}Response></s:Body></s:Envelope>",
                    'text/xml; charset="utf-8"')

    def log_message(self, format: str, *args: object) -> None:
        pass


def _ssdp(sock: socket.socket, location: str) -> None:
    while True:
        data, addr = sock.recvfrom(2048)
        lines = data.decode("latin-1").split("\r\n")
        if not lines[0].startswith("M-SEARCH"):
            continue
        st = next((line.split(":", 1)[1].strip() for line in lines
                   if line.lower().startswith("st:")), "ssdp:all")
        _emit({"kind": "ssdp", "from": addr[0], "st": st})
        sock.sendto((f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: {st}\r\n"
                     f"USN: uuid:00000000-0000-0000-0000-000000000001::{st}\r\nEXT:\r\n"
                     f"SERVER: fake/1 UPnP/1.1 fake/1\r\nLOCATION: {location}\r\n\r\n"
                     ).encode(), addr)


def main(own_ip: str) -> None:
    http = ThreadingHTTPServer((own_ip, 0), _Handler)
    ssdp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ssdp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ssdp.bind(("", SSDP_PORT))
    ssdp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    struct.pack("4s4s", socket.inet_aton(SSDP_GROUP), socket.inet_aton(own_ip)))
    location = f"http://{own_ip}:{http.server_address[1]}/rootDesc.xml"
    threading.Thread(target=_ssdp, args=(ssdp, location), daemon=True).start()
    print("ready", flush=True)
    http.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
