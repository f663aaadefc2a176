"""The iperf3 appliance: iperf3's control protocol (protocol.py, sans-IO) and its drivers on our
scheduler and TCP, a server (server.py, also the appliance's main) and a client (client.py)."""
