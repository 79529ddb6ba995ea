module sockvisor.example/server

go 1.19
