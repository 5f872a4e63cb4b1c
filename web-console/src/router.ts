import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'
import { useAuthStore } from '@/stores/auth'

export const routes: RouteRecordRaw[] = [
  {
    path: '/login',
    name: 'login',
    component: () => import('@/views/LoginView.vue'),
    meta: { public: true },
  },
  {
    path: '/',
    component: () => import('@/layouts/AppLayout.vue'),
    children: [
      { path: '', name: 'dashboard', component: () => import('@/views/DashboardView.vue') },
      { path: 'keys', name: 'keys', component: () => import('@/views/KeysView.vue') },
      { path: 'policies', name: 'policies', component: () => import('@/views/PoliciesView.vue') },
      { path: 'access-keys', name: 'access-keys', component: () => import('@/views/AccessKeysView.vue') },
      { path: 'logs', name: 'logs', component: () => import('@/views/LogsView.vue') },
      { path: 'usage', name: 'usage', component: () => import('@/views/UsageView.vue') },
      { path: 'settings', name: 'settings', component: () => import('@/views/SettingsView.vue') },
    ],
  },
  { path: '/:pathMatch(.*)*', redirect: '/' },
]

export function createAppRouter() {
  const router = createRouter({ history: createWebHistory(), routes })
  router.beforeEach((to) => {
    const auth = useAuthStore()
    if (!to.meta.public && !auth.isAuthenticated) {
      return { name: 'login', query: to.fullPath !== '/' ? { redirect: to.fullPath } : {} }
    }
    if (to.name === 'login' && auth.isAuthenticated) return { name: 'dashboard' }
    return true
  })
  return router
}
