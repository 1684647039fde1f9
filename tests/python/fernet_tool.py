"""Python's own Fernet, for the field-encryption interop test (cryptography from PyPI).

Usage:
  fernet_tool.py genkey                      -> prints a new key (Fernet.generate_key())
  fernet_tool.py encrypt KEY PLAINTEXT       -> prints a token
  fernet_tool.py decrypt KEY[,KEY...] TOKEN  -> prints the plaintext (MultiFernet), or exits 1
                                               with "InvalidToken" on stderr
"""

import sys

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def main(argv):
    if argv[1:2] == ["genkey"]:
        print(Fernet.generate_key().decode())
        return 0
    if len(argv) == 4 and argv[1] == "encrypt":
        print(Fernet(argv[2].encode()).encrypt(argv[3].encode()).decode())
        return 0
    if len(argv) == 4 and argv[1] == "decrypt":
        keys = MultiFernet([Fernet(k.encode()) for k in argv[2].split(",")])
        try:
            print(keys.decrypt(argv[3].encode()).decode())
        except InvalidToken:
            print("InvalidToken", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
