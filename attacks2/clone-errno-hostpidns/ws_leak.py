import base64, os, socket, sys, time
port=int(sys.argv[1]); tok=sys.argv[2]  # usage: ws_leak.py PORT EXEC_TOKEN (app 'evil' from run.sh, started without its final rm)
s=socket.create_connection(('127.0.0.1',port),timeout=5)
key=base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /v1/state/applications/evil/service-instances/web-1/containers/web/exec-interactive?cmd=busybox%20sleep%20777&tty=false HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v1.exec-interactive.supd\r\n\r\n").encode())
print(s.recv(300).split(b'\r\n')[0]); time.sleep(1); s.close()
