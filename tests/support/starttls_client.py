"""A third-party (OpenSSL) NBD client for the TLS corners libnbd cannot show: it upgrades with
NBD_OPT_STARTTLS and presents whatever client certificate it is given, even one the server's CA
did not sign (gnutls, in libnbd, withholds such a certificate), then sends a second STARTTLS.

Usage: starttls_client.py HOST PORT CA_FILE CERT_FILE KEY_FILE
Prints the replies; exits 0 when the second STARTTLS was answered, 3 when the server closed."""
import socket
import ssl
import struct
import sys

IHAVEOPT = 0x49484156454F5054
OPT_STARTTLS = 5


def main():
    host, port, ca, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    plain = socket.create_connection((host, port), timeout=20)
    exact(plain, 18)
    plain.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    plain.sendall(struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0))
    print("starttls reply", hex(read_reply(plain)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    context.load_cert_chain(cert, key)
    secure = context.wrap_socket(plain, server_hostname="localhost")
    print("tls", secure.version())
    try:
        secure.sendall(struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0))
        print("second starttls reply", hex(read_reply(secure)))
    except (OSError, EOFError) as e:
        print("closed by server:", e)
        sys.exit(3)


def exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return data


def read_reply(sock):
    _magic, _option, reply_type, length = struct.unpack(">QIII", exact(sock, 20))
    exact(sock, length)
    return reply_type


main()
