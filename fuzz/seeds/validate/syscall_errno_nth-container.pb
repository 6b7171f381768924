
containerd://3f2a9c1be0d4'¢$
connect
sendto
clone3
mmap5 Z"
teamstorage