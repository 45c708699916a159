//! Service routing (ClusterIP, NodePort, LoadBalancer, headless) and cluster DNS.
